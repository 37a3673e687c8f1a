package machine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors/registry"
	"github.com/emp-job-queue/machine/core/plan"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/core/supervisor"
	"github.com/emp-job-queue/machine/core/worker"
	"github.com/emp-job-queue/machine/gpu"
)

// layout is what the machine runs now: the configuration's connectors and their plan. It
// changes when an operator enables, disables or resizes a connector.
type layout struct {
	cfg  *config.Config
	plan *plan.Plan
}

func (m *Machine) layout() *layout { return m.cur.Load() }

// fleet owns the running slots: it starts them, stops them (draining first), and lets them be
// added or removed while the machine runs.
type fleet struct {
	m       *Machine
	b       *broker.Broker
	sampler *gpu.Sampler
	sup     *supervisor.Supervisor
	writes  context.Context // final writes are held until this ends (the shutdown deadline)
	jobs    context.Context // parent of every job; StopNow cancels it
	ctx     context.Context // the machine's run: installs for live changes end with it

	mu       sync.Mutex
	runs     map[string]*slotRun      // by slot id
	wake     map[string]chan struct{} // by connector
	draining map[string]bool          // connectors whose slots are being removed

	change sync.Mutex // one connector change at a time
}

type slotRun struct {
	slot      plan.Slot
	stopClaim context.CancelFunc
	stopJob   context.CancelFunc
	done      chan struct{}
}

// start registers and runs slots.
func (f *fleet) start(ctx context.Context, slots []plan.Slot) error {
	if len(slots) == 0 {
		return nil
	}
	caps, err := f.m.capabilities(slots)
	if err != nil {
		return err
	}
	workers := make([]broker.Worker, len(slots))
	states := make([]state.Slot, len(slots))
	for i, s := range slots {
		workers[i] = broker.Worker{ID: s.ID, MachineID: f.m.cfg.MachineID, Capabilities: caps[s.ID]}
		states[i] = state.Slot{ID: s.ID, Connector: s.Connector, GPU: s.GPU}
	}
	if err := f.b.Register(ctx, workers); err != nil {
		return err
	}
	f.m.store.AddSlots(states)
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range slots {
		wake := f.wake[s.Connector]
		if wake == nil {
			wake = make(chan struct{}, 64)
			f.wake[s.Connector] = wake
		}
		claimCtx, stopClaim := context.WithCancel(context.Background())
		jobCtx, stopJob := context.WithCancel(f.jobs)
		run := &slotRun{slot: s, stopClaim: stopClaim, stopJob: stopJob, done: make(chan struct{})}
		conn := f.m.connector(s, f.m.layout().plan.Service(s.Service))
		slot := worker.New(worker.Params{
			ID: s.ID, Connector: s.Connector, Caps: caps[s.ID], Conn: conn,
			Broker: f.b, Store: f.m.store, Metrics: f.m.metrics, Wake: wake, Gate: f.m.gate(f.sampler, f.sup, s, conn),
			PollInterval: f.m.cfg.PollInterval, ScanLimit: f.m.cfg.ClaimScanLimit, JobTimeout: f.m.cfg.JobTimeout, Log: f.m.log,
			Track: f.m.track, Writes: f.writes,
		})
		f.runs[s.ID] = run
		go func() {
			defer close(run.done)
			slot.Run(claimCtx, jobCtx)
		}()
	}
	return nil
}

// stop stops slots: they claim nothing from now on, their jobs get the drain timeout to
// finish, then go back to the queue without using a retry; then the slots are deregistered.
func (f *fleet) stop(ids []string, drain time.Duration) {
	f.mu.Lock()
	var runs []*slotRun
	for _, id := range ids {
		if r := f.runs[id]; r != nil {
			runs = append(runs, r)
			r.stopClaim()
		}
	}
	f.mu.Unlock()
	deadline := time.After(drain)
	for _, r := range runs {
		select {
		case <-r.done:
		case <-deadline:
			f.m.log.Warn("drain timeout passed; returning unfinished jobs to the queue", "timeout", drain.String())
			for _, r := range runs {
				r.stopJob()
			}
		}
	}
	for _, r := range runs {
		<-r.done
		r.stopJob()
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(f.writes), 3*time.Second)
	defer cancel()
	if err := f.b.Deregister(ctx, ids); err != nil {
		f.m.log.Warn("workers not deregistered", "err", err)
	}
	f.mu.Lock()
	for _, id := range ids {
		delete(f.runs, id)
	}
	f.mu.Unlock()
	f.m.store.RemoveSlots(ids)
}

// ids lists the running slots.
func (f *fleet) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.runs))
	for id := range f.runs {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// dispatch wakes one idle slot of each connector that serves a just-submitted job's service
// ("" wakes every slot).
func (f *fleet) dispatch(service string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	woken := map[string]bool{}
	for _, r := range f.runs {
		c := r.slot.Connector
		if woken[c] || (service != "" && !slices.Contains(r.slot.JobServices, service)) {
			continue
		}
		woken[c] = service != ""
		select {
		case f.wake[c] <- struct{}{}:
		default:
		}
	}
}

func (f *fleet) isDraining(connector string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.draining[connector]
}

// ErrChangeInProgress says another connector change is still draining.
var ErrChangeInProgress = errors.New("another connector change is still in progress; try again when it finishes")

// SetConnector enables a connector (count 0: one slot per GPU for GPU-bound ones, else one),
// disables it (enable false), or sets its slot count, while the machine runs. New slots start
// claiming at once; removed slots drain in the background (their jobs finish, or return to the
// queue after the drain timeout) and are then deregistered. Running jobs of other slots are
// not disturbed.
func (m *Machine) SetConnector(name string, enable bool, count int) (string, error) {
	f := m.fleet.Load()
	if f == nil {
		return "", fmt.Errorf("the machine is not running yet")
	}
	if !f.change.TryLock() {
		return "", ErrChangeInProgress
	}
	locked := true
	defer func() {
		if locked {
			f.change.Unlock()
		}
	}()
	cur := m.layout()
	next := *cur.cfg
	next.Connectors = slices.Clone(cur.cfg.Connectors)
	i := slices.IndexFunc(next.Connectors, func(c config.Connector) bool { return c.Name == name })
	switch {
	case !enable && i < 0:
		return "", fmt.Errorf("connector %q is not enabled on this machine", name)
	case !enable:
		next.Connectors = slices.Delete(next.Connectors, i, i+1)
	case i >= 0 && count <= 0:
		return "", fmt.Errorf("connector %q is already enabled; give a slot count to change its concurrency", name)
	case i >= 0:
		next.Connectors[i] = config.Connector{Name: name, Count: count}
	case count > 0:
		next.Connectors = append(next.Connectors, config.Connector{Name: name, Count: count})
	default:
		next.Connectors = append(next.Connectors, config.Connector{Name: name, Auto: true})
	}
	if err := registry.Check(&next); err != nil {
		return "", err
	}
	m.remember(name)
	p, err := plan.New(&next)
	if err != nil {
		return "", err
	}
	var added []plan.Slot
	var removed []string
	for _, s := range p.Slots {
		if !slices.ContainsFunc(cur.plan.Slots, func(o plan.Slot) bool { return o.ID == s.ID }) {
			added = append(added, s)
		}
	}
	for _, s := range cur.plan.Slots {
		if !slices.ContainsFunc(p.Slots, func(o plan.Slot) bool { return o.ID == s.ID }) {
			removed = append(removed, s.ID)
		}
	}
	newServices := servicesOnlyIn(p, cur.plan)
	if len(added) > 0 && len(newServices) > 0 {
		// The connector needs services: install and start them in the background; its slots
		// start at once and claim when the services are ready.
		locked = false
		go func() {
			defer f.change.Unlock()
			if err := m.install(f.ctx, newServices); err != nil {
				m.log.Error("connector not enabled: its services did not install", "connector", name, "err", err)
				return
			}
			for _, svc := range newServices {
				spec, err := m.serviceSpec(svc)
				if err == nil {
					err = f.sup.Add(spec)
				}
				if err != nil {
					m.log.Error("connector not enabled: its service did not start", "connector", name, "service", svc.Name, "err", err)
					return
				}
			}
			m.cur.Store(&layout{cfg: &next, plan: p})
			ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
			defer cancel()
			if err := f.start(ctx, added); err != nil {
				m.log.Error("the new slots did not start", "connector", name, "err", err)
				return
			}
			m.log.Info("connector changed", "connector", name, "slots_added", len(added), "services_added", len(newServices))
		}()
		return fmt.Sprintf("%s: installing and starting %d service(s); its %d slot(s) claim once they are ready", name, len(newServices), len(added)), nil
	}
	if len(added) > 0 {
		m.cur.Store(&layout{cfg: &next, plan: p})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := f.start(ctx, added); err != nil {
			m.cur.Store(cur)
			return "", fmt.Errorf("start the new slots of %s: %w", name, err)
		}
		m.log.Info("connector changed", "connector", name, "slots_added", len(added))
		return fmt.Sprintf("%s: %d slot(s) started", name, len(added)), nil
	}
	if len(removed) == 0 {
		m.cur.Store(&layout{cfg: &next, plan: p})
		return fmt.Sprintf("%s: nothing to change", name), nil
	}
	f.mu.Lock()
	f.draining[name] = true
	f.mu.Unlock()
	m.store.Touch()
	locked = false // the drain below releases the change lock when it is done
	gone := servicesOnlyIn(cur.plan, p)
	go func() {
		f.stop(removed, m.cfg.DrainTimeout)
		for _, svc := range gone { // no other connector needs them
			if err := f.sup.Remove(svc.Name); err != nil {
				m.log.Warn("service not removed", "service", svc.Name, "err", err)
			}
			m.store.RemoveService(svc.Name)
		}
		m.cur.Store(&layout{cfg: &next, plan: p})
		f.mu.Lock()
		delete(f.draining, name)
		f.mu.Unlock()
		f.change.Unlock()
		m.store.Touch()
		m.log.Info("connector changed", "connector", name, "slots_removed", len(removed))
	}()
	return fmt.Sprintf("%s: draining %d slot(s): their jobs finish, or go back to the queue after %s", name, len(removed), m.cfg.DrainTimeout), nil
}

// servicesOnlyIn lists the services of a that b does not have.
func servicesOnlyIn(a, b *plan.Plan) []plan.Service {
	var out []plan.Service
	for _, svc := range a.Services {
		if b.Service(svc.Name) == nil {
			out = append(out, svc)
		}
	}
	return out
}

// remember notes a connector the machine has run, so the console keeps offering it.
func (m *Machine) remember(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !slices.Contains(m.known, name) {
		m.known = append(m.known, name)
	}
}

// knownConnectors lists every connector the machine has run since it started.
func (m *Machine) knownConnectors() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.known)
}
