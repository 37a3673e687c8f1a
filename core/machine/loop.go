package machine

import (
	"context"
	"sync"
	"time"
)

// loop is the start/shutdown shape every background component of the machine shares (as in
// asynq): start runs the component's one goroutine under the caller's WaitGroup; shutdown stops
// it and waits until it returned. A component that was never started shuts down at once.
type loop struct {
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func newLoop() loop {
	ctx, cancel := context.WithCancel(context.Background())
	return loop{ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

// run starts fn in the component's goroutine.
func (l *loop) run(wg *sync.WaitGroup, fn func(ctx context.Context)) {
	l.once.Do(func() {
		wg.Go(func() {
			defer close(l.done)
			fn(l.ctx)
		})
	})
}

// stop ends the goroutine and waits for it.
func (l *loop) stop() {
	l.cancel()
	l.once.Do(func() { close(l.done) })
	<-l.done
}

// every calls fn every period until ctx ends.
func every(ctx context.Context, period time.Duration, fn func(ctx context.Context)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn(ctx)
		}
	}
}
