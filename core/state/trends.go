package state

import (
	"maps"
	"time"
)

// trendCap is how many samples each trend keeps: 5 minutes at the default 1 Hz, like the
// GPU sampler's rings.
const trendCap = 300

// minRateWindow is the shortest window jobs/min is measured over.
const minRateWindow = 10 * time.Second

// Trends are the machine's recent history, one value per telemetry sample, oldest first: what
// the console draws as graphs. A Trends value is immutable once in a snapshot: the store only
// ever appends past the end readers see, or replaces the slices.
type Trends struct {
	Step       time.Duration // between the last two samples
	QueueDepth []float64
	JobsPerMin []float64 // jobs ended (completed or failed) in the minute before each sample
	HostCPU    []float64 // % of all cores; n/a as NaN
	// ServiceCPU and ServiceRSS are per supervised service: % of one core and MB.
	ServiceCPU map[string][]float64
	ServiceRSS map[string][]float64

	ended []uint64 // Snapshot.Ended at each sample, for JobsPerMin
	last  time.Time
}

func push(vals []float64, v float64) []float64 {
	vals = append(vals, v)
	if len(vals) > 2*trendCap { // drop the head in batches, copying only the window kept
		vals = append([]float64(nil), vals[len(vals)-trendCap:]...)
	}
	return vals
}

// window returns the last trendCap values of a trend.
func window(vals []float64) []float64 { return vals[max(0, len(vals)-trendCap):] }

// next is the trends after one more sample.
func (t Trends) next(s Telemetry, queue int64, ended uint64) Trends {
	if !t.last.IsZero() && s.At.After(t.last) {
		t.Step = s.At.Sub(t.last).Round(time.Millisecond)
	}
	t.last = s.At
	t.QueueDepth = push(t.QueueDepth, float64(queue))
	t.HostCPU = push(t.HostCPU, s.Host.CPUPercent)
	t.ended = append(t.ended, ended)
	if len(t.ended) > 2*trendCap {
		t.ended = append([]uint64(nil), t.ended[len(t.ended)-trendCap:]...)
	}
	// The rate over the last minute, or over what there is of it; a window shorter than
	// minRateWindow counts as that long, so the first jobs after start are no spike.
	perMin := 0.0
	if t.Step > 0 {
		k := min(len(t.ended)-1, int(time.Minute/t.Step))
		if k > 0 {
			span := max(time.Duration(k)*t.Step, minRateWindow)
			perMin = float64(ended-t.ended[len(t.ended)-1-k]) * float64(time.Minute) / float64(span)
		}
	}
	t.JobsPerMin = push(t.JobsPerMin, perMin)
	cpu, rss := make(map[string][]float64, len(s.Services)), make(map[string][]float64, len(s.Services))
	for _, r := range s.Services {
		cpu[r.Name] = push(t.ServiceCPU[r.Name], r.CPUPercent)
		rss[r.Name] = push(t.ServiceRSS[r.Name], r.RSSMB)
	}
	t.ServiceCPU, t.ServiceRSS = cpu, rss
	return t
}

// Window returns the trends cut to their last trendCap samples, for readers.
func (t Trends) Window() Trends {
	t.QueueDepth, t.JobsPerMin, t.HostCPU = window(t.QueueDepth), window(t.JobsPerMin), window(t.HostCPU)
	t.ServiceCPU, t.ServiceRSS = maps.Clone(t.ServiceCPU), maps.Clone(t.ServiceRSS)
	for k, v := range t.ServiceCPU {
		t.ServiceCPU[k] = window(v)
	}
	for k, v := range t.ServiceRSS {
		t.ServiceRSS[k] = window(v)
	}
	return t
}
