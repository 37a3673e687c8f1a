package machine

import (
	"cmp"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/emp-job-queue/machine/core/connectors/throttle"
	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/gpu"
)

// addDetail fills in what the console's graphs and describe views show beyond the main rows:
// host load, trends, per-GPU readings and history, per-service command, exits and load, per-job
// summaries and progress, and the slots.
func addDetail(out *control.Snapshot, snap state.Snapshot, sampler *gpu.Sampler, now time.Time) {
	t := snap.Telemetry
	out.Host = control.Host{
		CPUPercent: control.Reading(t.Host.CPUPercent), Cores: t.Host.CPUCores, MemUsedMB: control.Reading(t.Host.MemUsedMB),
		MemTotalMB: control.Reading(t.Host.MemTotalMB), DiskPath: t.Host.DiskPath, DiskUsedGB: control.Reading(t.Host.DiskUsedGB),
		DiskTotalGB: control.Reading(t.Host.DiskTotalGB),
	}
	tr := snap.Trends.Window()
	out.Trends = control.Trends{StepMS: tr.Step.Milliseconds(), QueueDepth: tr.QueueDepth, JobsPerMin: rounded(tr.JobsPerMin, 10),
		HostCPU: rounded(tr.HostCPU, 1)}
	for i := range out.GPUs {
		g := &out.GPUs[i]
		for _, r := range t.GPUs {
			if r.Index != g.Index {
				continue
			}
			d := control.GPUDetail{UUID: r.UUID, UtilMemory: control.Reading(r.UtilMemory), FanPct: control.Reading(r.FanPct),
				SMClockMHz: control.Reading(r.SMClockMHz), MemClockMHz: control.Reading(r.MemClockMHz), PState: control.Reading(r.PState),
				EncoderUtil: control.Reading(r.EncoderUtil), DecoderUtil: control.Reading(r.DecoderUtil)}
			for _, p := range r.Processes {
				d.Processes = append(d.Processes, control.GPUProcess{PID: p.PID, MemoryMB: p.MemoryMB})
			}
			if sampler != nil {
				d.MemHistory = rounded(sampler.History(r.Index, gpu.MemoryUsed), 1)
				d.TempHistory = rounded(sampler.History(r.Index, gpu.Temperature), 1)
				d.PowerHistory = rounded(sampler.History(r.Index, gpu.Power), 1)
			}
			g.Detail = d
		}
	}
	for i := range out.Connectors {
		if t, ok := snap.Throttle(out.Connectors[i].Name); ok {
			out.Connectors[i].Throttle = throttleView(t, now)
		}
	}
	for i := range out.Services {
		sv := &out.Services[i]
		st, ok := snap.Service(sv.Name)
		if !ok {
			continue
		}
		d := control.ServiceDetail{Command: st.Command, GPU: st.GPU, Adopted: st.Adopted, Probe: st.Probe, LastExit: st.LastExit,
			CPUHistory: rounded(tr.ServiceCPU[sv.Name], 10), RSSHistory: rounded(tr.ServiceRSS[sv.Name], 1)}
		for _, e := range st.Exits {
			d.Exits = append(d.Exits, control.Exit{AtMS: e.At.UnixMilli(), Reason: e.Reason})
		}
		for _, r := range t.Services {
			if r.Name == sv.Name {
				d.CPUPercent, d.RSSMB = control.Reading(r.CPUPercent), control.Reading(r.RSSMB)
			}
		}
		sv.Detail = d
	}
	for i := range out.Jobs {
		if sl, ok := snap.Slot(out.Jobs[i].Slot); ok {
			out.Jobs[i].Detail = jobDetail(sl.Info, sl.Steps, sl.JobStartedAt)
		}
	}
	recent := snap.Recent[max(0, len(snap.Recent)-len(out.Recent)):]
	for i := range out.Recent {
		f := recent[i]
		out.Recent[i].Slot, out.Recent[i].EndedMS = f.SlotID, f.At.UnixMilli()
		out.Recent[i].Detail = jobDetail(f.Info, f.Steps, f.At.Add(-f.Duration))
		out.Recent[i].Detail.Resources = resourceFields(f.Resources)
	}
	for _, sl := range snap.Slots {
		out.Slots = append(out.Slots, control.Slot{ID: sl.ID, Connector: sl.Connector, GPU: sl.GPU, Status: sl.Status, JobID: sl.JobID,
			Completed: sl.Completed, Failed: sl.Failed, LastError: sl.LastError, IdleMS: now.Sub(sl.LastActivity).Milliseconds()})
	}
}

func jobDetail(info state.JobInfo, steps []state.ProgressPoint, started time.Time) control.JobDetail {
	d := control.JobDetail{Customer: info.Customer, Priority: info.Priority, Requirements: info.Requirements, Workflow: info.Workflow,
		Attempt: info.Attempt, MaxRetries: info.MaxRetries}
	if ms, err := strconv.ParseInt(info.CreatedAt, 10, 64); err == nil {
		d.CreatedMS = ms
	} else if t, err := time.Parse(time.RFC3339Nano, info.CreatedAt); err == nil {
		d.CreatedMS = t.UnixMilli()
	}
	if !started.IsZero() {
		d.StartedMS = started.UnixMilli()
	}
	for _, f := range info.Payload {
		d.Payload = append(d.Payload, control.Field{Key: f.Key, Value: f.Value})
	}
	for _, p := range steps {
		d.Steps = append(d.Steps, control.Step{AtMS: p.At.UnixMilli(), Percent: p.Percent, Message: p.Message})
	}
	return d
}

// rounded copies a history with n/a as -1 and values rounded to 1/scale, which keeps the
// snapshot's JSON short (5 minutes of 1 Hz samples per metric).
func rounded(vals []float64, scale float64) []float64 {
	if len(vals) == 0 {
		return nil
	}
	out := make([]float64, len(vals))
	for i, v := range vals {
		if gpu.IsNA(v) {
			out[i] = -1
		} else {
			out[i] = math.Round(v*scale) / scale
		}
	}
	return out
}

// resourceFields is a job's resource record as the describe view lists it: the keys of the
// result's metadata.resources, absent readings left out.
func resourceFields(r *job.Resources) map[string]any {
	if r == nil {
		return nil
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return nil
	}
	var out map[string]any
	if json.Unmarshal(raw, &out) != nil {
		return nil
	}
	return out
}

// throttleView is a remote API connector's throttle record as the console shows it.
func throttleView(t throttle.State, now time.Time) *control.Throttle {
	v := &control.Throttle{Throttled: t.Throttled(now), Why: t.Why(now), RateLimited1m: t.RecentRateLimits(now),
		RateLimitedTotal: t.RateLimitedTotal, RetryAfterMS: t.RetryAfter.Milliseconds(), Breaker: string(t.Breaker)}
	if !t.RetryAfterAt.IsZero() {
		v.RetryAfterAtMS = t.RetryAfterAt.UnixMilli()
	}
	if !t.BreakerSince.IsZero() {
		v.BreakerSinceMS = t.BreakerSince.UnixMilli()
	}
	for _, e := range t.Errors {
		v.Errors = append(v.Errors, control.APIError{AtMS: e.At.UnixMilli(), Text: e.Text})
	}
	return v
}

// cachedModels are the model cache's models on disk with their sizes, by name.
func cachedModels(c state.ModelCache) []control.CachedModel {
	out := make([]control.CachedModel, 0, len(c.OnDisk))
	for _, name := range c.OnDisk {
		out = append(out, control.CachedModel{Name: name, Bytes: c.Sizes[name]})
	}
	return out
}

// demandConsoleView is the console's view of the demand tracker's: services by pending jobs, then by
// arrival rate, then by name.
func demandConsoleView(d state.Demand, now time.Time) control.Demand {
	v := control.Demand{Tracked: d.Tracked, Note: d.Note}
	if !d.Tracked || d.At.IsZero() {
		return v
	}
	v.AgeMS, v.QueueLength, v.Unattributed = now.Sub(d.At).Milliseconds(), d.QueueLength, d.Unattributed
	names := map[string]bool{}
	for s := range d.Pending {
		names[s] = true
	}
	for s := range d.Rates {
		names[s] = true
	}
	for s := range names {
		v.Services = append(v.Services, control.ServiceDemand{Service: s, Pending: d.Pending[s], PerMin: math.Round(d.Rates[s]*100) / 100})
	}
	slices.SortFunc(v.Services, func(a, b control.ServiceDemand) int {
		return cmp.Or(cmp.Compare(b.Pending, a.Pending), cmp.Compare(b.PerMin, a.PerMin), cmp.Compare(a.Service, b.Service))
	})
	for _, m := range d.Models {
		v.Models = append(v.Models, control.ModelDemand{Name: m.Name, Pending: m.Pending, Score: math.Round(m.Score*100) / 100})
	}
	return v
}
