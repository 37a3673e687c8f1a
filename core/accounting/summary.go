package accounting

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/gpu"
)

// recentPerService bounds the records kept per service for percentiles: the p95 is over the
// last 4,096 jobs of the window. Counts, means and totals cover every job, from per-minute sums,
// so the memory stays fixed at any job rate.
const recentPerService = 4096

// summary keeps each service's jobs over a sliding window (callers hold the accountant's lock).
type summary struct {
	window   time.Duration
	services map[string]*serviceWindow
	dirty    bool // a job ended since the last costs()
}

type serviceWindow struct {
	minutes []minuteSums // ring by minute
	recent  []recentJob  // ring of the last jobs
	next    int
}

type minuteSums struct {
	minute         int64
	jobs           int
	runMS          float64
	whJobs         int
	wh, gpuSeconds float64
}

type recentJob struct {
	at    time.Time
	runMS float64
	wh    float64 // NA when not measured
}

func newSummary(window time.Duration) *summary {
	return &summary{window: window, services: map[string]*serviceWindow{}}
}

func (s *summary) add(service string, at time.Time, r job.Resources) {
	w := s.services[service]
	if w == nil {
		w = &serviceWindow{minutes: make([]minuteSums, int(math.Ceil(s.window.Minutes()))+1)}
		s.services[service] = w
	}
	minute := at.Unix() / 60
	b := &w.minutes[minute%int64(len(w.minutes))]
	if b.minute != minute {
		*b = minuteSums{minute: minute}
	}
	rec := recentJob{at: at, runMS: float64(r.RunMS), wh: gpu.NA}
	b.jobs++
	b.runMS += rec.runMS
	if r.GPUSeconds != nil {
		b.gpuSeconds += *r.GPUSeconds
	}
	if r.GPUEnergyWh != nil {
		rec.wh = *r.GPUEnergyWh
		b.whJobs++
		b.wh += rec.wh
	}
	if len(w.recent) < recentPerService {
		w.recent = append(w.recent, rec)
	} else {
		w.recent[w.next] = rec
		w.next = (w.next + 1) % recentPerService
	}
	s.dirty = true
}

// costs summarizes every service with jobs in the window, sorted by service.
func (s *summary) costs(now time.Time) []state.ServiceCost {
	s.dirty = false
	from := now.Add(-s.window)
	first := from.Unix() / 60 // whole minutes: the window's oldest minute counts entirely
	var out []state.ServiceCost
	for name, w := range s.services {
		c := state.ServiceCost{Service: name}
		var runSum, whSum float64
		whJobs := 0
		for _, b := range w.minutes {
			if b.jobs == 0 || b.minute < first || b.minute > now.Unix()/60 {
				continue
			}
			c.Jobs += b.jobs
			runSum += b.runMS
			whSum += b.wh
			whJobs += b.whJobs
			c.GPUSeconds += b.gpuSeconds
		}
		if c.Jobs == 0 {
			continue
		}
		c.RunMeanMS = runSum / float64(c.Jobs)
		c.EnergyWh = whSum
		var runs, whs []float64
		for _, r := range w.recent {
			if r.at.Unix()/60 < first {
				continue
			}
			runs = append(runs, r.runMS)
			if !gpu.IsNA(r.wh) {
				whs = append(whs, r.wh)
			}
		}
		c.RunP95MS = p95(runs)
		if whJobs > 0 {
			mean := whSum / float64(whJobs)
			c.WhMean = &mean
			if len(whs) > 0 {
				p := p95(whs)
				c.WhP95 = &p
			}
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b state.ServiceCost) int { return cmp.Compare(a.Service, b.Service) })
	return out
}

// p95 is the nearest-rank 95th percentile.
func p95(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[int(math.Ceil(0.95*float64(len(v))))-1]
}
