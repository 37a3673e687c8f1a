package gpu

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Metric names a GPU metric kept in history.
type Metric int

const (
	Utilization Metric = iota
	MemoryUsed
	Temperature
	Power
	numMetrics
)

// ring keeps the last n values of a metric.
type ring struct {
	vals []float64
	next int
	full bool
}

func newRing(n int) *ring { return &ring{vals: make([]float64, n)} }

func (r *ring) add(v float64) {
	r.vals[r.next] = v
	r.next = (r.next + 1) % len(r.vals)
	if r.next == 0 {
		r.full = true
	}
}

// values returns the history, oldest first.
func (r *ring) values() []float64 {
	if !r.full {
		return append([]float64(nil), r.vals[:r.next]...)
	}
	return append(append([]float64(nil), r.vals[r.next:]...), r.vals[:r.next]...)
}

// Snapshot is one sample of everything the sampler reads.
type Snapshot struct {
	At        time.Time
	GPUs      []Reading
	Unhealthy map[int]string // GPU index → why it is out of service
	Host      HostReading
	Services  []ServiceReading
	Err       string // why the last GPU read failed, if it did
}

// SamplerParams builds a Sampler. Every field is immutable after NewSampler.
type SamplerParams struct {
	Source   Source
	Interval time.Duration // default 1 s
	History  int           // samples kept per metric; default 300 (5 minutes at 1 Hz)
	Host     *Host         // nil: no host metrics
	Services func() map[string]int
	OnSample func(Snapshot)       // called after each sample, on the sampler's goroutine
	OnHealth func(ev HealthEvent) // called when a GPU goes out of service
	Log      *slog.Logger
	// HealthRetry is the first wait before watching health again after the watch failed; it
	// doubles up to a minute. Default 1 s.
	HealthRetry time.Duration
}

// healthFailuresBeforeUnhealthy is how many health watches in a row may fail before every GPU
// is taken out of service: a GPU whose failures cannot be seen is not trusted with jobs (as
// NVIDIA's device plugin does).
const healthFailuresBeforeUnhealthy = 3

// Sampler reads the GPUs and the host on its own goroutine, at a fixed rate, and keeps a
// history per GPU and metric. Readers (the console, /status, metrics) take copies; nothing
// on a render path ever calls the source.
type Sampler struct {
	p SamplerParams

	mu        sync.RWMutex
	latest    Snapshot
	history   map[int]*[numMetrics]*ring
	unhealthy map[int]string
}

// NewSampler returns a sampler; Run starts it.
func NewSampler(p SamplerParams) *Sampler {
	if p.Interval <= 0 {
		p.Interval = time.Second
	}
	if p.History <= 0 {
		p.History = 300
	}
	if p.HealthRetry <= 0 {
		p.HealthRetry = time.Second
	}
	if p.Log == nil {
		p.Log = slog.New(slog.DiscardHandler)
	}
	s := &Sampler{p: p, history: map[int]*[numMetrics]*ring{}, unhealthy: map[int]string{}}
	for _, d := range p.Source.Devices() {
		var rings [numMetrics]*ring
		for m := range rings {
			rings[m] = newRing(p.History)
		}
		s.history[d.Index] = &rings
	}
	return s
}

// Run samples until ctx ends, and watches for health events.
func (s *Sampler) Run(ctx context.Context) {
	events := make(chan HealthEvent, 8)
	var wg sync.WaitGroup
	wg.Go(func() { s.watchHealth(ctx, events) })
	defer wg.Wait()
	tick := time.NewTicker(s.p.Interval)
	defer tick.Stop()
	s.Sample(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			s.markUnhealthy(ev)
		case <-tick.C:
			s.Sample(ctx)
		}
	}
}

// watchHealth keeps the source's health watch running: a watch that fails is logged and
// started again after a growing wait, and after healthFailuresBeforeUnhealthy failures in a
// row every GPU is out of service, saying why.
func (s *Sampler) watchHealth(ctx context.Context, events chan<- HealthEvent) {
	wait, failures := s.p.HealthRetry, 0
	for ctx.Err() == nil {
		started := time.Now()
		err := s.p.Source.WatchHealth(ctx, events)
		if err == nil {
			return // ctx ended, or the source has no events to watch
		}
		if time.Since(started) > time.Minute {
			wait, failures = s.p.HealthRetry, 0 // it worked for a while: a new failure
		}
		failures++
		s.p.Log.Warn("GPU health events cannot be read; watching again", "err", err, "failures", failures, "retry_in", wait.String())
		if failures == healthFailuresBeforeUnhealthy {
			for _, d := range s.p.Source.Devices() {
				reason := fmt.Sprintf("its health cannot be watched (%v)", err)
				select {
				case events <- HealthEvent{Index: d.Index, UUID: d.UUID, Reason: reason}:
				case <-ctx.Done():
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, time.Minute)
	}
}

func (s *Sampler) markUnhealthy(ev HealthEvent) {
	s.mu.Lock()
	_, already := s.unhealthy[ev.Index]
	s.unhealthy[ev.Index] = ev.Reason
	s.mu.Unlock()
	if already {
		return
	}
	s.p.Log.Error("GPU out of service: its slots stop claiming until the machine restarts after a GPU reset",
		"gpu", ev.Index, "uuid", ev.UUID, "reason", ev.Reason)
	if s.p.OnHealth != nil {
		s.p.OnHealth(ev)
	}
}

// Sample takes one sample now.
func (s *Sampler) Sample(ctx context.Context) Snapshot {
	snap := Snapshot{At: time.Now()}
	readings, err := s.p.Source.Read(ctx)
	if err != nil {
		snap.Err = err.Error()
	}
	snap.GPUs = readings
	if s.p.Host != nil {
		snap.Host = s.p.Host.Read(ctx)
		if s.p.Services != nil {
			snap.Services = s.p.Host.Services(ctx, s.p.Services())
		}
	}
	s.mu.Lock()
	for _, r := range readings {
		if h := s.history[r.Index]; h != nil {
			h[Utilization].add(r.UtilGPU)
			h[MemoryUsed].add(r.MemoryUsedMB)
			h[Temperature].add(r.TemperatureC)
			h[Power].add(r.PowerW)
		}
	}
	snap.Unhealthy = make(map[int]string, len(s.unhealthy))
	for k, v := range s.unhealthy {
		snap.Unhealthy[k] = v
	}
	s.latest = snap
	s.mu.Unlock()
	if s.p.OnSample != nil {
		s.p.OnSample(snap)
	}
	return snap
}

// Latest returns the last sample.
func (s *Sampler) Latest() Snapshot {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.latest
}

// History returns a GPU's recent values of a metric, oldest first (NA where a reading was n/a).
func (s *Sampler) History(gpu int, m Metric) []float64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h := s.history[gpu]
	if h == nil || m < 0 || m >= numMetrics {
		return nil
	}
	return h[m].values()
}

// Healthy reports whether a GPU is in service; a GPU the sampler does not know is healthy
// (a CPU-bound slot has none).
func (s *Sampler) Healthy(gpu int) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, bad := s.unhealthy[gpu]
	return !bad
}
