package machine

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/demand"
)

// demandWatch runs the machine's one demand tracker (core/demand), which the autoscaler and
// the model cache share: one subscription and one reconciliation of the queue per machine. The
// tracker never stays down: after an error it subscribes again after trackerRestartAfter.
type demandWatch struct {
	tracker *demand.Tracker
	log     *slog.Logger
	loop    loop
}

func newDemandWatch(client redis.UniversalClient, log *slog.Logger) *demandWatch {
	return &demandWatch{tracker: demand.New(demand.Params{Client: client, Log: log}), log: log, loop: newLoop()}
}

func (d *demandWatch) start(wg *sync.WaitGroup) {
	d.loop.run(wg, func(ctx context.Context) {
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
