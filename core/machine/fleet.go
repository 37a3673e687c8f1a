package machine

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/emp-job-queue/machine/core/accounting"
	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/connectors/registry"
	"github.com/emp-job-queue/machine/core/plan"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/core/supervisor"
	"github.com/emp-job-queue/machine/core/worker"
	"github.com/emp-job-queue/machine/gpu"
)

// fleet owns the running slots: it starts them, stops them (draining first), and lets them be
// added or removed while the machine runs.
type fleet struct {
	m       *Machine
	b       *broker.Broker
	sampler *gpu.Sampler
	sup     *supervisor.Supervisor
	writes  context.Context // final writes are held until this ends (the shutdown deadline)
	jobs    context.Context // parent of every job; StopNow cancels it

	mu    sync.Mutex
	runs  map[string]*slotRun // by slot id
	waker *worker.Waker       // wakes idle slots (broker.Watch)
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
		wake := f.waker.Channel(s.Connector, s.JobServices)
		slotCaps := caps[s.ID]
		claimCtx, stopClaim := context.WithCancel(context.Background())
		jobCtx, stopJob := context.WithCancel(f.jobs)
		run := &slotRun{slot: s, stopClaim: stopClaim, stopJob: stopJob, done: make(chan struct{})}
		conn := f.m.connector(s, f.m.layout().plan.Service(s.Service))
		slot := worker.New(worker.Params{
			ID: s.ID, Connector: s.Connector, Caps: caps[s.ID], Conn: f.m.models.wrap(conn, s),
			Broker: f.b, Store: f.m.store, Metrics: f.m.metrics, Wake: wake, Waker: f.waker, Gate: f.m.gate(f.sampler, f.sup, s, conn),
			PollInterval: f.m.cfg.PollInterval, ScanLimit: f.m.cfg.ClaimScanLimit, JobTimeout: f.m.cfg.JobTimeout, Log: f.m.log,
			Track: f.m.track, Writes: f.writes, Accounting: f.m.accounts.Slot(s.ID, binding(s)),
			PollTicket: func(ctx context.Context) bool {
				return f.b.PollTicket(ctx, slotCaps, f.m.cfg.PollInterval)
			},
		})
		f.runs[s.ID] = run
		go func() {
			defer close(run.done)
			slot.Run(claimCtx, jobCtx)
		}()
	}
	return nil
}

// binding is what a slot's jobs run on, for their resource records.
func binding(s plan.Slot) accounting.Binding {
	b := accounting.Binding{Service: s.Service}
	if s.GPU != plan.NoGPU {
		b.GPUs = []int{s.GPU}
	}
	return b
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
	ctx, cancel := context.WithTimeout(context.WithoutCancel(f.writes), finalWritesGrace)
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

// gate keeps a slot from claiming while the operator drained the machine, its GPU is out of
// service, its service is not ready, or its connector says it is unavailable (an open breaker).
func (m *Machine) gate(s *gpu.Sampler, sup *supervisor.Supervisor, slot plan.Slot, conn connectors.Connector) func() bool {
	avail, _ := conn.(connectors.Availability)
	return func() bool {
		return !m.paused.Load() && (slot.GPU == plan.NoGPU || s.Healthy(slot.GPU)) && (slot.Service == "" || sup.Ready(slot.Service)) &&
			(avail == nil || avail.Available())
	}
}

// connector returns the connector for a slot, shared by every slot of the same connector and
// service instance: a remote API's rate limit and breaker are per connector, a service's
// capacity per instance.
func (m *Machine) connector(slot plan.Slot, svc *plan.Service) connectors.Connector {
	key := slot.Connector
	if svc != nil {
		key += "@" + svc.Name
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conns == nil {
		m.conns = map[string]connectors.Connector{}
	}
	c, ok := m.conns[key]
	if !ok {
		d, _ := registry.Lookup(slot.Connector) // the plan knows only registered connectors
		env := connectors.Env{Config: m.cfg, Assets: m.assets, Network: jobNetwork(m.cfg), Throttle: m.throttleLocked(slot.Connector)}
		if svc != nil {
			env.ServiceURL = fmt.Sprintf("http://127.0.0.1:%d", svc.Port)
		}
		c = d.New(env)
		m.conns[key] = c
	}
	return c
}

// capabilities builds the claim capabilities of slots.
func (m *Machine) capabilities(slots []plan.Slot) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, s := range slots {
		gpus := m.cfg.GPUCount
		if s.GPU != plan.NoGPU {
			gpus = 1
		}
		c := broker.Capabilities{
			WorkerID: s.ID, MachineID: m.cfg.MachineID, Services: s.JobServices,
			Hardware: broker.Hardware{
				GPUCount: gpus, GPUMemoryGB: m.cfg.GPUMemoryGB, GPUModel: m.cfg.GPUModel,
				RAMGB: m.cfg.RAMGB, CPUCores: m.cfg.CPUCores,
			},
			CustomerAccess: broker.CustomerAccess{
				Isolation: m.cfg.CustomerIsolation, AllowedCustomers: m.cfg.AllowedCustomers, DeniedCustomers: m.cfg.DeniedCustomers,
			},
			Performance: broker.Performance{ConcurrentJobs: 1},
			Pool:        m.cfg.Pool, WorkflowID: m.cfg.WorkflowID, Custom: m.cfg.CustomCapabilities,
		}
		for _, svc := range s.JobServices {
			models := m.cfg.Models[svc]
			if models == nil {
				models = m.cfg.Models["*"]
			}
			if m.models != nil && s.GPU != plan.NoGPU {
				// The claim matches requirements.models against this list, so it holds what the
				// slot can serve: the catalogue's models too, downloaded when a job needs them.
				// Which are on disk or in VRAM goes to the claim's preference (cachedModels).
				models = union(models, m.models.cache.Names())
			}
			if models != nil {
				if c.Models == nil {
					c.Models = map[string][]string{}
				}
				c.Models[svc] = models
			}
		}
		b, err := c.Encode()
		if err != nil {
			return nil, err
		}
		out[s.ID] = b
	}
	return out, nil
}

// union is a followed by the names of b it lacks.
func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, n := range b {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// jobServices are the service_required values the running slots claim.
func (m *Machine) jobServices() []string {
	var out []string
	for _, s := range m.layout().plan.Slots {
		for _, svc := range s.JobServices {
			if !slices.Contains(out, svc) {
				out = append(out, svc)
			}
		}
	}
	return out
}
