package machine

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/metrics"
	"github.com/emp-job-queue/machine/core/state"
)

// liveness checks that the broker answers (for /health and machine_broker_up), heartbeats every
// slot when its heartbeat is due, and now and then prunes the claim script's service cache.
type liveness struct {
	p    livenessParams // immutable
	loop loop
}

type livenessParams struct {
	broker    *broker.Broker
	store     *state.Store
	metrics   *metrics.Metrics
	log       *slog.Logger
	slots     func() []string // the running slots' ids
	heartbeat time.Duration   // WORKER_HEARTBEAT_INTERVAL_MS
}

func newLiveness(p livenessParams) *liveness { return &liveness{p: p, loop: newLoop()} }

func (l *liveness) start(wg *sync.WaitGroup) {
	l.loop.run(wg, func(ctx context.Context) {
		// Confined to this goroutine.
		lastBeat, lastPrune := time.Now(), time.Now()
		every(ctx, brokerPingEvery, func(ctx context.Context) {
			pctx, cancel := context.WithTimeout(ctx, brokerPingTimeout)
			err := l.p.broker.Ping(pctx)
			if err == nil && time.Since(lastBeat) >= l.p.heartbeat-time.Second {
				if err = l.p.broker.Heartbeat(pctx, l.p.slots()); err == nil {
					lastBeat = time.Now()
				}
			}
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err == nil && time.Since(lastPrune) >= servicePruneEvery {
				lastPrune = time.Now()
				if n, perr := l.p.broker.PruneServiceCache(ctx); perr != nil {
					l.p.log.Warn("service cache not pruned; will try again", "err", perr)
				} else if n > 0 {
					l.p.log.Debug("service cache pruned", "entries", n)
				}
			}
			l.p.store.BrokerReachable(err == nil, err)
			if err == nil {
				l.p.metrics.BrokerUp.Set(1)
			} else {
				l.p.metrics.BrokerUp.Set(0)
			}
		})
	})
}

func (l *liveness) shutdown() { l.loop.stop() }

// queueDepth counts the pending jobs of the services this machine serves, for the console, and
// reads the expected durations of their jobs (jobs:stats:duration), for /status.
type queueDepth struct {
	p    queueDepthParams // immutable
	loop loop
}

type queueDepthParams struct {
	broker   *broker.Broker
	store    *state.Store
	services func() []string // the job services the running slots claim
}

func newQueueDepth(p queueDepthParams) *queueDepth { return &queueDepth{p: p, loop: newLoop()} }

func (q *queueDepth) start(wg *sync.WaitGroup) {
	q.loop.run(wg, func(ctx context.Context) {
		count := func(ctx context.Context) {
			if n, _, err := q.p.broker.PendingFor(ctx, q.p.services(), queueDepthScan); err == nil {
				q.p.store.SetQueueDepth(n)
			}
			if stats, err := q.p.broker.DurationStats(ctx, q.p.services(), durationsShown); err == nil {
				d := make([]state.Duration, 0, len(stats))
				for _, s := range stats {
					d = append(d, state.Duration{Service: s.Service, Model: s.Model, EWMA: s.EWMA, Count: s.Count})
				}
				q.p.store.SetDurations(d)
			}
		}
		count(ctx)
		every(ctx, queueDepthEvery, count)
	})
}

func (q *queueDepth) shutdown() { q.loop.stop() }
