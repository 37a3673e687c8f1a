package accounting

import (
	"sync"
	"time"

	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/gpu"
)

// Record is one job attempt's record while it runs. It implements job.PhaseTimer, so the
// connector marks its preparation and upload phases on it.
type Record struct {
	a                      *Accountant
	slotID, jobID, service string
	claimed, created       time.Time // created is zero when the job has no readable created_at
	hasGPU                 bool
	gpus                   []*gpuShare
	svc                    *serviceShare

	mu     sync.Mutex
	phases [job.PhaseUpload + 1]phaseClock
	done   bool

	once sync.Once
	res  job.Resources
}

// phaseClock times a phase: overlapping marks of the same phase count once.
type phaseClock struct {
	active int
	since  time.Time
	total  time.Duration
}

// BeginPhase implements job.PhaseTimer.
func (r *Record) BeginPhase(p job.Phase) (end func()) {
	if p != job.PhasePrepare && p != job.PhaseUpload {
		return func() {}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return func() {}
	}
	c := &r.phases[p]
	if c.active == 0 {
		c.since = r.a.p.Now()
	}
	c.active++
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.done || c.active == 0 {
			return
		}
		if c.active--; c.active == 0 {
			c.total += r.a.p.Now().Sub(c.since)
		}
	}
}

// servicePIDs are the processes of the job's service as last read, to find them in the GPU's
// process list.
func (r *Record) servicePIDs() []int32 {
	if r.svc == nil {
		return nil
	}
	return r.svc.m.currentPIDs()
}

// Finish closes the record and returns it. With a successful result it adds the record as
// metadata.resources, and takes the API usage the connector reported. Only the first call
// counts; later ones return the same record.
func (r *Record) Finish(res *job.Result) job.Resources {
	r.once.Do(func() {
		r.res = r.finish(res)
		if res != nil && res.Success {
			if res.Metadata == nil {
				res.Metadata = map[string]any{}
			}
			res.Metadata["resources"] = r.res
		}
		r.a.ended(r, r.res)
	})
	return r.res
}

func (r *Record) finish(res *job.Result) job.Resources {
	now := r.a.p.Now()
	r.mu.Lock()
	r.done = true
	var spent [len(r.phases)]time.Duration
	for p := range r.phases {
		c := &r.phases[p]
		spent[p] = c.total
		if c.active > 0 { // a phase still open at the end ends with it
			spent[p] += now.Sub(c.since)
		}
	}
	r.mu.Unlock()

	var out job.Resources
	total := now.Sub(r.claimed)
	out.PrepareMS = spent[job.PhasePrepare].Milliseconds()
	out.UploadMS = spent[job.PhaseUpload].Milliseconds()
	out.RunMS = max(0, (total - spent[job.PhasePrepare] - spent[job.PhaseUpload]).Milliseconds())
	if !r.created.IsZero() {
		// A negative wait is the API's clock ahead of ours: the job did not wait.
		wait := max(0, r.claimed.Sub(r.created).Milliseconds())
		out.QueueWaitMS = &wait
	}

	out.GPUEnergySource = job.EnergyNone
	if r.hasGPU {
		r.gpuFigures(now, &out)
	}
	if r.svc != nil {
		cpu, rss := r.svc.m.end(r.svc)
		if !gpu.IsNA(cpu) {
			out.CPUSeconds = &cpu
		}
		if !gpu.IsNA(rss) {
			out.PeakRSSMB = &rss
		}
	}
	if res != nil && len(res.APIUsage) > 0 {
		out.APIUsage = res.APIUsage
	}
	r.price(&out)
	return out
}

// gpuFigures closes the job's GPU shares and sums them over the GPUs.
func (r *Record) gpuFigures(now time.Time, out *job.Resources) {
	var seconds, joules, peak float64
	peakKnown, shared, integrated, unmeasured := true, false, false, false
	for _, sh := range r.gpus {
		sh.m.end(sh, now)
		seconds += sh.seconds
		joules += sh.joules
		integrated = integrated || sh.integrated
		unmeasured = unmeasured || sh.unmeasured
		shared = shared || sh.shared
		switch {
		case !gpu.IsNA(sh.peakProcess):
			peak += sh.peakProcess
		case !gpu.IsNA(sh.peakDevice):
			peak += sh.peakDevice
		default:
			peakKnown = false
		}
	}
	out.GPUSeconds = &seconds
	out.GPUMemoryShared = &shared
	if peakKnown {
		out.GPUPeakMemoryMB = &peak
	}
	if unmeasured {
		return // part of the job's time has no energy figure: none is given
	}
	wh := joules / 3600
	out.GPUEnergyWh = &wh
	out.GPUEnergySource = job.EnergyCounter
	if integrated {
		out.GPUEnergySource = job.EnergyIntegrated
	}
}

// price sets cost_usd when a price is set and every figure it prices was measured.
func (r *Record) price(out *job.Resources) {
	hour, kwh := r.a.p.GPUHourPrice, r.a.p.KWhPrice
	if !r.hasGPU || (hour <= 0 && kwh <= 0) {
		return
	}
	cost := hour * *out.GPUSeconds / 3600
	if kwh > 0 {
		if out.GPUEnergyWh == nil {
			return
		}
		cost += kwh * *out.GPUEnergyWh / 1000
	}
	out.CostUSD = &cost
}
