// Package accounting keeps a resource record of every job attempt, from its claim to its final
// write: how long it waited, prepared, ran and uploaded; the GPU-seconds, energy and peak GPU
// memory of the GPUs its slot is bound to; the CPU-seconds and peak RSS of the service it ran
// on (with that service's child processes); and the usage a remote API reported. A completed
// job's record goes into its result as metadata.resources; every record feeds Prometheus and a
// per-service summary over the last hour in the state store.
//
// The figures come from events and samples the machine already has, never from extra reads of
// the GPUs:
//
//	claim ──▶ Begin ─────────────── samples (Observe, 1 Hz) ─────────────── Finish ──▶ final write
//	           │  GPU meter: time shares, energy per sample interval           │
//	           │  service meter: process-tree CPU and RSS at each event/sample  │
//	           └─ phases marked by connectors (job.Mark): prepare, upload ──────┘
//
// A GPU's time between two events (a claim, an end, a sample) is split equally between the
// jobs on it then; the energy of a sample interval is charged to each job at the interval's
// measured rate (the total-energy counter's difference, else the power readings integrated)
// for its share of that interval. The time from the last sample to a job's end is charged at
// the latest measured rate, so a job shorter than the sample interval still gets its energy.
// A figure that was not measured (no counter and no power, no service) is absent.
package accounting

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/metrics"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/gpu"
)

// Params builds an Accountant. Every field is immutable after New.
type Params struct {
	Store   *state.Store     // records of finished jobs and the per-service summary; nil: none
	Metrics *metrics.Metrics // nil: no metrics
	// ServicePID returns the pid of a supervised service (0 when it does not run); nil: no
	// service figures.
	ServicePID   func(name string) int
	GPUHourPrice float64 // MACHINE_GPU_HOUR_PRICE in USD; 0: unset
	KWhPrice     float64 // MACHINE_KWH_PRICE in USD; 0: unset
	// Window is the span of the per-service summary; default one hour.
	Window time.Duration
	Now    func() time.Time // default time.Now
}

// Accountant keeps the records. It is safe for concurrent use: slots begin and finish records
// while the sampler's goroutine observes samples.
type Accountant struct {
	p Params

	mu       sync.Mutex
	gpus     map[int]*gpuMeter
	services map[string]*serviceMeter
	summary  *summary
	pushed   time.Time // when the summary last went to the store
}

// New returns an accountant.
func New(p Params) *Accountant {
	if p.Now == nil {
		p.Now = time.Now
	}
	if p.Window <= 0 {
		p.Window = time.Hour
	}
	return &Accountant{p: p, gpus: map[int]*gpuMeter{}, services: map[string]*serviceMeter{}, summary: newSummary(p.Window)}
}

// Binding is what a slot's jobs run on.
type Binding struct {
	GPUs    []int  // GPU indexes the slot is bound to; none for CPU or remote work
	Service string // the supervised service the slot's connector talks to; "" for none
}

func (a *Accountant) gpuMeter(index int) *gpuMeter {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.gpus[index]
	if m == nil {
		m = newGPUMeter()
		a.gpus[index] = m
	}
	return m
}

func (a *Accountant) serviceMeter(name string) *serviceMeter {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.services[name]
	if m == nil {
		pid := func() int { return 0 }
		if a.p.ServicePID != nil {
			pid = func() int { return a.p.ServicePID(name) }
		}
		m = &serviceMeter{pid: pid}
		a.services[name] = m
	}
	return m
}

// Begin opens the record of a job attempt a slot just claimed.
func (a *Accountant) Begin(slotID string, b Binding, j *job.Job) *Record {
	now := a.p.Now()
	r := &Record{a: a, slotID: slotID, jobID: j.ID, service: j.Service, claimed: now, hasGPU: len(b.GPUs) > 0}
	if t, err := time.Parse(time.RFC3339Nano, j.Fields["created_at"]); err == nil {
		r.created = t
	}
	if b.Service != "" && a.p.ServicePID != nil {
		r.svc = a.serviceMeter(b.Service).begin()
	}
	for _, g := range b.GPUs {
		r.gpus = append(r.gpus, a.gpuMeter(g).begin(now, r.servicePIDs))
	}
	return r
}

// Observe takes one sample of the GPU sampler: it reads the service trees of running jobs,
// charges the GPUs' sample interval to the jobs on them, and now and then refreshes the
// per-service summary in the store. It runs on the sampler's goroutine.
func (a *Accountant) Observe(s gpu.Snapshot) {
	a.mu.Lock()
	services := make([]*serviceMeter, 0, len(a.services))
	for _, m := range a.services {
		services = append(services, m)
	}
	a.mu.Unlock()
	for _, m := range services {
		m.tick()
	}
	for _, r := range s.GPUs {
		a.gpuMeter(r.Index).sample(s.At, r)
	}
	a.pushSummary(false)
}

// pushSummary puts the per-service summary in the store: when a job ended since the last
// push (at most once a second), or every minute as the window slides.
func (a *Accountant) pushSummary(force bool) {
	if a.p.Store == nil {
		return
	}
	now := a.p.Now()
	a.mu.Lock()
	due := force || (a.summary.dirty && now.Sub(a.pushed) >= time.Second) || now.Sub(a.pushed) >= time.Minute
	if !due {
		a.mu.Unlock()
		return
	}
	a.pushed = now
	costs := a.summary.costs(now)
	a.mu.Unlock()
	a.p.Store.SetCosts(costs)
}

// Summary returns the per-service summary over the window, sorted by service.
func (a *Accountant) Summary() []state.ServiceCost {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.summary.costs(a.p.Now())
}

// ended files a finished record: metrics, the summary, and the store's view of the slot.
func (a *Accountant) ended(r *Record, res job.Resources) {
	if a.p.Metrics != nil {
		a.p.Metrics.ObserveJobResources(r.service, res)
	}
	a.mu.Lock()
	a.summary.add(r.service, a.p.Now(), res)
	a.mu.Unlock()
	if a.p.Store != nil {
		a.p.Store.SetJobResources(r.slotID, r.jobID, &res)
	}
}

// Slot is the accounting of one worker slot, as core/worker uses it.
type Slot struct {
	a  *Accountant
	id string
	b  Binding
}

// Slot returns the accounting of a slot with its binding.
func (a *Accountant) Slot(slotID string, b Binding) *Slot {
	b.GPUs = slices.Clone(b.GPUs)
	return &Slot{a: a, id: slotID, b: b}
}

type recordKey struct{}

// Claimed opens the record of a job the slot just claimed; the returned context carries it,
// and its phase timer (job.Mark), to the connector.
func (s *Slot) Claimed(ctx context.Context, j *job.Job) context.Context {
	r := s.a.Begin(s.id, s.b, j)
	return job.WithPhaseTimer(context.WithValue(ctx, recordKey{}, r), r)
}

// Finished closes the record before the job's final write and, for a successful result, adds
// it as metadata.resources. Only the first call counts.
func (s *Slot) Finished(ctx context.Context, _ *job.Job, res *job.Result) {
	if r, ok := ctx.Value(recordKey{}).(*Record); ok {
		r.Finish(res)
	}
}
