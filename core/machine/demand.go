package machine

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/demand"
	"github.com/emp-job-queue/machine/core/state"
)

// demandWatch runs the machine's one demand tracker (core/demand), which the autoscaler and
// the model cache share: one subscription and one reconciliation of the queue per machine. The
// tracker never stays down: after an error it subscribes again after trackerRestartAfter.
// Every demandPublishEvery it copies the tracker's view into the state store for the console.
type demandWatch struct {
	tracker *demand.Tracker
	store   *state.Store
	log     *slog.Logger
	loop    loop
	last    state.Demand // what publish stored last; touched only by the publishing goroutine
}

func newDemandWatch(client redis.UniversalClient, store *state.Store, log *slog.Logger) *demandWatch {
	return &demandWatch{tracker: demand.New(demand.Params{Client: client, Log: log}), store: store, log: log, loop: newLoop()}
}

func (d *demandWatch) start(wg *sync.WaitGroup) {
	d.loop.run(wg, func(ctx context.Context) {
		var view sync.WaitGroup
		defer view.Wait()
		view.Go(func() {
			d.publish()
			every(ctx, demandPublishEvery, func(context.Context) { d.publish() })
		})
		for ctx.Err() == nil {
			if err := d.tracker.Run(ctx); err != nil && ctx.Err() == nil {
				d.log.Warn("demand tracker stopped; the autoscaler and the model cache see no new demand until it restarts", "err", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(trackerRestartAfter):
			}
		}
	})
}

func (d *demandWatch) shutdown() { d.loop.stop() }
