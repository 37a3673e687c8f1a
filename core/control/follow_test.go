package control

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// pacedCore is a core whose changes the test signals.
type pacedCore struct {
	events, readings chan struct{}
	seq              atomic.Uint64
}

func newPacedCore() *pacedCore {
	return &pacedCore{events: make(chan struct{}, 1), readings: make(chan struct{}, 1)}
}

func (c *pacedCore) Snapshot() Snapshot { return Snapshot{Seq: c.seq.Add(1)} }
func (c *pacedCore) Changes() (events, readings <-chan struct{}, stop func()) {
	return c.events, c.readings, func() {}
}
func (c *pacedCore) Do(context.Context, Command) Result { return Result{OK: true} }

// sent is a snapshot follow sent, and when.
type sent struct {
	Snapshot
	at time.Time
}

// following runs follow on core with p and returns the snapshots it sends, the first at once.
func following(t *testing.T, core Core, p pacing) <-chan sent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan sent, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		follow(ctx, core, p, func(s Snapshot) bool { out <- sent{s, time.Now()}; return true })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return out
}

func next(t *testing.T, out <-chan sent) sent {
	t.Helper()
	select {
	case s := <-out:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot was sent")
		return sent{}
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Readings wait for their gap, while an event goes at once and takes the waiting readings with it.
func TestReadingsWaitAndEventsDoNot(t *testing.T) {
	core := newPacedCore()
	out := following(t, core, pacing{event: time.Millisecond, reading: time.Hour})
	if s := next(t, out); s.Seq != 1 {
		t.Fatalf("the first snapshot is #%d, want #1", s.Seq)
	}
	for range 3 {
		signal(core.readings)
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case s := <-out:
		t.Fatalf("snapshot #%d was sent for readings within their gap", s.Seq)
	default:
	}
	signal(core.events)
	if s := next(t, out); s.Seq != 2 {
		t.Errorf("the event's snapshot is #%d, want #2", s.Seq)
	}
	select {
	case s := <-out:
		t.Fatalf("snapshot #%d was sent again for readings the event's snapshot carried", s.Seq)
	case <-time.After(100 * time.Millisecond):
	}
}

// Readings alone are sent once their gap since the last snapshot has passed.
func TestReadingsGoAfterTheirGap(t *testing.T) {
	core := newPacedCore()
	const gap = 200 * time.Millisecond
	out := following(t, core, pacing{event: time.Millisecond, reading: gap})
	last := next(t, out).at
	for want := uint64(2); want <= 3; want++ {
		signal(core.readings)
		s := next(t, out)
		if s.Seq != want {
			t.Fatalf("snapshot #%d, want #%d", s.Seq, want)
		}
		if s.at.Sub(last) < gap {
			t.Errorf("snapshot #%d came %s after the one before, inside the %s reading gap", s.Seq, s.at.Sub(last), gap)
		}
		last = s.at
	}
}

// A console's interval is kept within the bounds, and 0 is the default.
func TestConsolePacingBoundsTheInterval(t *testing.T) {
	for asked, want := range map[time.Duration]time.Duration{
		0: DefaultInterval, time.Millisecond: MinInterval, 5 * time.Second: 5 * time.Second, time.Hour: MaxInterval,
	} {
		if got := consolePacing(asked); got.reading != want || got.event != 100*time.Millisecond {
			t.Errorf("consolePacing(%s) = %+v, want readings every %s and events after 100ms", asked, got, want)
		}
	}
}

// The interval a console dials with reaches the server: at a minute, a reading is not sent
// within the 2 s default.
func TestDialAsksForItsInterval(t *testing.T) {
	core := newPacedCore()
	path := filepath.Join(t.TempDir(), "control.sock")
	srv, err := Listen(path, core, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	client, err := Dial(ctx, path, MaxInterval)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if s := <-client.Updates(); s.Seq != 1 {
		t.Fatalf("the first snapshot is #%d", s.Seq)
	}
	signal(core.readings)
	select {
	case s := <-client.Updates():
		t.Fatalf("snapshot #%d came for a reading within the console's one-minute interval", s.Seq)
	case <-time.After(DefaultInterval + 500*time.Millisecond):
	}
	signal(core.events)
	select {
	case s := <-client.Updates():
		if s.Seq != 2 {
			t.Errorf("the event's snapshot is #%d, want #2", s.Seq)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot came for an event")
	}
}
