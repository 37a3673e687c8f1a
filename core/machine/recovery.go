package machine

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/state"
)

// recovery renews the leases of this machine's running jobs and, on every machine (a lock in
// Redis keeps it to one at a time), returns jobs whose lease expired to the queue.
type recovery struct {
	p    recoveryParams // immutable
	loop loop
}

type recoveryParams struct {
	broker *broker.Broker
	store  *state.Store
	log    *slog.Logger
	lease  time.Duration // MACHINE_LEASE_SECONDS
}

func newRecovery(p recoveryParams) *recovery { return &recovery{p: p, loop: newLoop()} }

func (r *recovery) start(wg *sync.WaitGroup) {
	r.loop.run(wg, func(ctx context.Context) {
		renewEvery := max(r.p.lease/3, minRenewEvery)
		renew := time.NewTicker(renewEvery)
		defer renew.Stop()
		reap := time.NewTicker(reapEvery)
		defer reap.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-renew.C:
				r.renew(ctx, renewEvery)
			case <-reap.C:
				r.reap(ctx)
			}
		}
	})
}

func (r *recovery) shutdown() { r.loop.stop() }

func (r *recovery) renew(ctx context.Context, within time.Duration) {
	var held []broker.Held
	for _, s := range r.p.store.Snapshot().Slots {
		if s.JobID != "" {
			held = append(held, broker.Held{JobID: s.JobID, WorkerID: s.ID})
		}
	}
	rctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	if _, err := r.p.broker.RenewLeases(rctx, held); err != nil && ctx.Err() == nil {
		r.p.log.Warn("leases not renewed; if this lasts past MACHINE_LEASE_SECONDS other machines re-run these jobs", "jobs", len(held), "err", err)
	}
}

func (r *recovery) reap(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, reapTimeout)
	requeued, failed, err := r.p.broker.Reap(rctx)
	cancel()
	if requeued+failed > 0 {
		r.p.log.Warn("jobs of machines that stopped renewing their leases were recovered", "requeued", requeued, "failed", failed)
	}
	if err != nil && ctx.Err() == nil {
		r.p.log.Debug("reaper skipped a round", "err", err)
	}
}
