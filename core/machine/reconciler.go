package machine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/emp-job-queue/machine/core/state"
)

// reconciler owns the running layout: the slots and the connectors' services. Changes come in
// as typed operations (Enable, Disable, Resize) from the console, the control socket and HTTP
// alike; each is checked at once against the layout the changes before it will leave, queued,
// and applied one at a time by the reconciler's goroutine: install and start services, start
// slots; drain and stop slots, remove services. Every change's progress and outcome, and every
// connector's state, is recorded in the state store, where the console, /status and the
// monitor read it. A change that fails leaves the layout before it in force.
//
//	submit ─▶ queued ─▶ applying ─┬─▶ done
//	                              └─▶ failed (previous layout intact)
type reconciler struct {
	p    reconcilerParams // immutable
	loop loop
	wake chan struct{}

	mu      sync.Mutex
	applied *layout  // the layout in force; written by the reconciler's goroutine only
	queue   []change // accepted changes, oldest first; queue[0] is being applied while busy
	lastID  uint64
	closed  bool // shutting down: no more changes
}

type reconcilerParams struct {
	store    *state.Store
	log      *slog.Logger
	fleet    *fleet
	services *services
	drain    time.Duration // MACHINE_DRAIN_TIMEOUT
	publish  func(*layout) // makes a layout the one readers see (the plan in machine:status)
}

// change is one accepted operation and its record.
type change struct {
	op     op
	record state.Change
}

// errStopping refuses changes once the machine stops.
var errStopping = errors.New("the machine is stopping; it takes no more connector changes")

func newReconciler(p reconcilerParams, current *layout) *reconciler {
	return &reconciler{p: p, loop: newLoop(), wake: make(chan struct{}, 1), applied: current}
}

// boot applies the first layout on the caller's goroutine, before start: a machine whose
// services cannot be installed does not start.
func (r *reconciler) boot(ctx context.Context, first *layout) error {
	for _, c := range first.cfg.Connectors {
		r.setConnector(first, c.Name, state.ConnectorInstalling, "")
	}
	from := emptyLayout(first.cfg)
	if err := r.apply(ctx, from, first, func(string) {}); err != nil {
		for _, c := range first.cfg.Connectors {
			r.setConnector(from, c.Name, state.ConnectorFailed, err.Error())
		}
		return err
	}
	r.mu.Lock()
	r.applied = first
	r.mu.Unlock()
	for _, c := range first.cfg.Connectors {
		r.setConnector(first, c.Name, state.ConnectorEnabled, "")
	}
	return nil
}

func (r *reconciler) start(wg *sync.WaitGroup) {
	r.loop.run(wg, func(ctx context.Context) {
		for {
			select {
			case <-ctx.Done():
				return
			case <-r.wake:
			}
			for r.next(ctx) {
			}
		}
	})
}

// shutdown refuses further changes, fails the queued ones, cancels the one being applied (an
// install stops; a drain runs to its end or its timeout) and waits for it.
func (r *reconciler) shutdown() {
	r.mu.Lock()
	r.closed = true
	var dropped []change
	if len(r.queue) > 1 {
		dropped = r.queue[1:]
		r.queue = r.queue[:1]
	}
	r.mu.Unlock()
	for _, c := range dropped {
		c.record.State, c.record.Error, c.record.FinishedAt = state.ChangeFailed, errStopping.Error(), time.Now()
		c.record.Message = "not applied: " + errStopping.Error()
		r.p.store.SetChange(c.record)
	}
	r.loop.stop()
}

// Enable adds a connector; count 0 gives it one slot per GPU instance when GPU-bound, else one.
func (r *reconciler) Enable(connector string, count int) (state.Change, error) {
	return r.submit(op{kind: opEnable, connector: connector, count: count})
}

// Disable drains a connector's slots and removes them, with the services no other connector needs.
func (r *reconciler) Disable(connector string) (state.Change, error) {
	return r.submit(op{kind: opDisable, connector: connector})
}

// Resize sets a connector's slot count, enabling it when it is not.
func (r *reconciler) Resize(connector string, count int) (state.Change, error) {
	return r.submit(op{kind: opResize, connector: connector, count: count})
}

// inFlight says whether a change of connector is queued or being applied.
func (r *reconciler) inFlight(connector string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.queue, func(c change) bool { return c.op.connector == connector })
}

// submit checks o against the layout the queued changes will leave and queues it. The record
// it returns says what will happen; its later progress is in the state store.
func (r *reconciler) submit(o op) (state.Change, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return state.Change{}, errStopping
	}
	projected := r.applied
	for _, c := range r.queue {
		if next, err := c.op.next(projected); err == nil {
			projected = next
		}
	}
	next, err := o.next(projected)
	if err != nil {
		return state.Change{}, err
	}
	r.lastID++
	rec := state.Change{ID: r.lastID, What: o.String(), State: state.ChangeQueued, RequestedAt: time.Now(),
		Message: fmt.Sprintf("%s: %s", o.connector, diffLayouts(projected, next).describe(r.p.drain))}
	if n := len(r.queue); n > 0 {
		rec.Message += fmt.Sprintf(" (after %d change(s) before it)", n)
	}
	r.queue = append(r.queue, change{op: o, record: rec})
	r.p.store.SetChange(rec)
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return rec, nil
}

// next applies the oldest queued change; false when there is none.
func (r *reconciler) next(ctx context.Context) bool {
	r.mu.Lock()
	if len(r.queue) == 0 {
		r.mu.Unlock()
		return false
	}
	c, from := r.queue[0], r.applied
	r.mu.Unlock()

	rec := c.record
	rec.State, rec.StartedAt = state.ChangeApplying, time.Now()
	r.p.store.SetChange(rec)
	to, err := c.op.next(from) // the queue was checked against projections; check the real thing
	if err == nil {
		d := diffLayouts(from, to)
		during := state.ConnectorEnabled
		switch {
		case len(d.services) > 0:
			during = state.ConnectorInstalling
		case len(d.removed) > 0:
			during = state.ConnectorDraining
		}
		r.setConnector(from, c.op.connector, during, "")
		err = r.apply(ctx, from, to, func(msg string) {
			rec.Message = msg
			r.p.store.SetChange(rec)
		})
	}

	r.mu.Lock()
	if err == nil {
		r.applied = to
	}
	r.queue = r.queue[1:]
	applied := r.applied
	r.mu.Unlock()

	rec.FinishedAt = time.Now()
	if err != nil {
		rec.State, rec.Error = state.ChangeFailed, err.Error()
		rec.Message = fmt.Sprintf("%s failed: %v; what ran before still runs", c.op, err)
		r.setConnector(applied, c.op.connector, state.ConnectorFailed, err.Error())
		r.p.log.Error("connector change failed; the layout before it is still in force", "change", c.op.String(), "err", err)
	} else {
		rec.State, rec.Message = state.ChangeDone, c.op.String()+": done"
		st := state.ConnectorEnabled
		if c.op.kind == opDisable {
			st = state.ConnectorDisabled
		}
		r.setConnector(applied, c.op.connector, st, "")
		r.p.log.Info("connector changed", "change", c.op.String())
	}
	r.p.store.SetChange(rec)
	return true
}

// apply turns from into to: new services are installed and started, then new slots start
// (claiming once their service is ready); removed slots drain, then services no connector needs
// stop. On an error what was added is taken back, so from stays in force.
func (r *reconciler) apply(ctx context.Context, from, to *layout, progress func(string)) error {
	d := diffLayouts(from, to)
	if len(d.services) > 0 {
		progress("installing " + serviceNames(d.services))
		if err := r.p.services.install(ctx, d.services); err != nil {
			return err
		}
		progress("starting " + serviceNames(d.services))
		if err := r.p.services.start(d.services); err != nil {
			return err
		}
	}
	if len(d.added) > 0 {
		r.p.publish(to) // the new slots' plan and services are readable once they run
		progress(fmt.Sprintf("starting %d slot(s)", len(d.added)))
		sctx, cancel := context.WithTimeout(ctx, slotStartTimeout)
		err := r.p.fleet.start(sctx, d.added)
		cancel()
		if err != nil {
			r.p.publish(from)
			r.p.services.stop(d.services)
			return fmt.Errorf("start the new slots: %w", err)
		}
	}
	if len(d.removed) > 0 {
		progress(fmt.Sprintf("draining %d slot(s): their jobs finish, or go back to the queue after %s", len(d.removed), r.p.drain))
		r.p.fleet.stop(d.removed, r.p.drain)
	}
	if len(d.gone) > 0 {
		progress("stopping " + serviceNames(d.gone))
		r.p.services.stop(d.gone)
	}
	r.p.publish(to)
	return nil
}

// setConnector records a connector's state, with its slot count in l.
func (r *reconciler) setConnector(l *layout, name string, st state.ConnectorState, errText string) {
	r.p.store.SetConnector(state.Connector{Name: name, State: st, Slots: len(l.plan.SlotsFor(name)), Error: errText})
}
