package machine

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/emp-job-queue/machine/core/autoscale"
	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors/registry"
	"github.com/emp-job-queue/machine/core/demand"
	"github.com/emp-job-queue/machine/core/metrics"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/gpu"
)

// autoscaler follows the queue's demand (core/demand) and, every autoscaleTick, asks
// core/autoscale what to change: it pre-warms allowed connectors jobs wait for, resizes
// bounded ones and stops idle ones, each decision sent to the reconciler as one typed change.
// Every decision, its reason and its outcome are in the state store, the metrics and the log.
//
// A remote API connector is throttled while its throttle record (core/connectors/throttle, in
// the state store) has a 429 within the last minute or a breaker that is not closed; the
// autoscaler then takes one slot off it per cooldown and does not grow it.
type autoscaler struct {
	p       autoscalerParams // immutable
	loop    loop
	tracker *demand.Tracker

	// Confined to the component's goroutine.
	hist      autoscale.History
	enabledAt map[string]time.Time // when each connector last became enabled (boot or autoscaler)
	lastTried map[string]time.Time // when the autoscaler last changed each connector
}

type autoscalerParams struct {
	tracker *demand.Tracker // run by the machine's demandWatch
	store   *state.Store
	metrics *metrics.Metrics
	log     *slog.Logger
	rec     *reconciler
	layout  func() *layout
	policy  autoscale.Policy
	every   time.Duration
}

// autoscaling says whether cfg asks for an autoscaler, and why not when it does not.
func autoscaling(cfg *config.Config) (bool, string) {
	switch {
	case !cfg.Demand.Autoscale:
		return false, "MACHINE_AUTOSCALE=off: the connectors stay as configured"
	case len(cfg.Demand.Allowed) == 0 && len(cfg.Demand.Bounds) == 0:
		return false, "nothing to scale: set MACHINE_ALLOWED_CONNECTORS or MACHINE_AUTOSCALE_BOUNDS"
	}
	return true, ""
}

// autoscalePolicy is cfg's autoscaling policy. Pinned connectors are the configured ones
// (WORKER_CONNECTORS) the machine may not stop on its own: those not in MACHINE_ALLOWED_CONNECTORS.
func autoscalePolicy(cfg *config.Config) autoscale.Policy {
	d := cfg.Demand
	bounds := map[string]autoscale.Bounds{}
	for name, s := range d.Bounds {
		bounds[name] = autoscale.Bounds{Min: s.Min, Max: s.Max}
	}
	var pinned []string
	for _, c := range cfg.Connectors {
		if !slices.Contains(d.Allowed, c.Name) {
			pinned = append(pinned, c.Name)
		}
	}
	return autoscale.Policy{Off: !d.Autoscale, Bounds: bounds, Allowed: slices.Clone(d.Allowed), Pinned: pinned,
		IdleTTL: d.IdleTTL, Cooldown: d.Cooldown, ShrinkAfter: autoscaleShrinkAfter, ShrinkBelow: autoscaleShrinkBelow,
		Headroom: autoscaleHeadroom}
}

func newAutoscaler(p autoscalerParams) *autoscaler {
	return &autoscaler{p: p, loop: newLoop(),
		tracker:   p.tracker,
		enabledAt: map[string]time.Time{}, lastTried: map[string]time.Time{}}
}

func (a *autoscaler) start(wg *sync.WaitGroup) {
	a.loop.run(wg, func(ctx context.Context) {
		now := time.Now()
		for _, c := range a.p.layout().cfg.Connectors {
			a.enabledAt[c.Name] = now
		}
		a.p.store.SetAutoscaler(true, "starting", now, 0, nil)
		every(ctx, a.p.every, func(context.Context) { a.round(time.Now()) })
	})
}

func (a *autoscaler) shutdown() { a.loop.stop() }

// round decides and applies the changes for this moment.
func (a *autoscaler) round(now time.Time) {
	snap := a.p.store.Snapshot()
	dsnap := a.tracker.Snapshot()
	if snap.Telemetry.At.IsZero() {
		a.p.store.SetAutoscaler(true, "waiting for the first GPU and host readings", now, dsnap.QueueLength, dsnap.Pending)
		return
	}
	conns := a.connectors(snap, now)
	decisions, hist := autoscale.Decide(a.p.policy, now, conns, headroom(snap.Telemetry), a.hist)
	a.hist = hist
	for _, d := range decisions {
		a.apply(d)
	}
	a.p.store.SetAutoscaler(true, "", now, dsnap.QueueLength, dsnap.Pending)
}

// connectors is each connector's situation: those running, those allowed and those bounded.
// One with a change queued or applying is left out until that change ends; one whose last
// change failed is not tried again within autoscaleRetryAfter.
func (a *autoscaler) connectors(snap state.Snapshot, now time.Time) []autoscale.Connector {
	l := a.p.layout()
	names := slices.Clone(a.p.policy.Allowed)
	for _, c := range l.cfg.Connectors {
		names = append(names, c.Name)
	}
	for name := range a.p.policy.Bounds {
		names = append(names, name)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	var out []autoscale.Connector
	for _, name := range names {
		if a.p.rec.inFlight(name) {
			continue
		}
		if st, ok := snap.Connector(name); ok && st.State == state.ConnectorFailed && now.Sub(a.lastTried[name]) < autoscaleRetryAfter {
			continue
		}
		desc, ok := registry.Lookup(name)
		if !ok {
			continue
		}
		c := autoscale.Connector{Name: name, GPU: desc.GPUBound, Slots: len(l.plan.SlotsFor(name)),
			Enabled: slices.ContainsFunc(l.cfg.Connectors, func(x config.Connector) bool { return x.Name == name })}
		if !c.Enabled {
			delete(a.enabledAt, name)
		} else if a.enabledAt[name].IsZero() {
			a.enabledAt[name] = now // enabled by an operator
		}
		c.LastJob = a.enabledAt[name]
		for _, s := range snap.Slots {
			if s.Connector != name {
				continue
			}
			if s.JobID != "" {
				c.Busy++
				c.LastJob = now
			} else if s.LastActivity.After(c.LastJob) {
				c.LastJob = s.LastActivity
			}
		}
		for _, svc := range desc.JobServices {
			c.Pending += a.tracker.PendingFor(svc)
		}
		if t, ok := snap.Throttle(name); ok && t.Throttled(now) {
			c.Throttled, c.ThrottledWhy = true, t.Why(now)
		}
		out = append(out, c)
	}
	return out
}

// apply sends one decision to the reconciler and records it with its outcome.
func (a *autoscaler) apply(d autoscale.Decision) {
	var (
		ch  state.Change
		err error
	)
	switch d.Kind {
	case autoscale.Enable:
		ch, err = a.p.rec.Enable(d.Connector, d.Count)
	case autoscale.Resize:
		ch, err = a.p.rec.Resize(d.Connector, d.Count)
	case autoscale.Disable:
		ch, err = a.p.rec.Disable(d.Connector)
	}
	a.lastTried[d.Connector] = d.At
	rec := state.Decision{At: d.At, Kind: string(d.Kind), Connector: d.Connector, From: d.From, Count: d.Count, Reason: d.Reason}
	if err != nil {
		rec.Outcome = "refused: " + err.Error()
		a.p.log.Warn("autoscaler decision refused", "decision", d.String(), "connector", d.Connector, "kind", d.Kind, "err", err)
	} else {
		rec.Outcome, rec.Change = fmt.Sprintf("queued as change %d", ch.ID), ch.ID
		if d.Kind == autoscale.Enable {
			a.enabledAt[d.Connector] = d.At
		}
		a.p.log.Info("autoscaler decision", "decision", d.String(), "connector", d.Connector, "kind", d.Kind,
			"count", d.Count, "reason", d.Reason, "change", ch.ID)
	}
	a.p.metrics.AutoscaleDecisions.WithLabelValues(d.Connector, string(d.Kind)).Inc()
	a.p.store.AddDecision(rec)
}

// headroom is what the latest sample says the machine has free; a reading a device cannot
// give stays NaN, which no limit refuses.
func headroom(t state.Telemetry) autoscale.Headroom {
	h := autoscale.Headroom{GPUFreeMemGB: math.NaN(), GPUUtil: math.NaN(), RAMFreeGB: math.NaN(), CPU: math.NaN()}
	for _, g := range t.GPUs {
		if _, bad := t.Unhealthy[g.Index]; bad {
			continue
		}
		if !gpu.IsNA(g.MemoryTotalMB) && !gpu.IsNA(g.MemoryUsedMB) {
			h.GPUFreeMemGB = zeroNaN(h.GPUFreeMemGB) + (g.MemoryTotalMB-g.MemoryUsedMB)/1024
		}
		if !gpu.IsNA(g.UtilGPU) {
			h.GPUUtil = max(zeroNaN(h.GPUUtil), g.UtilGPU/100)
		}
	}
	if !gpu.IsNA(t.Host.MemTotalMB) && !gpu.IsNA(t.Host.MemUsedMB) {
		h.RAMFreeGB = (t.Host.MemTotalMB - t.Host.MemUsedMB) / 1024
	}
	if !gpu.IsNA(t.Host.CPUPercent) {
		h.CPU = t.Host.CPUPercent / 100
	}
	return h
}

func zeroNaN(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}
