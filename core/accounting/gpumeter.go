package accounting

import (
	"slices"
	"sync"
	"time"

	"github.com/emp-job-queue/machine/gpu"
)

// gpuMeter shares one GPU's time and energy between the jobs on it.
//
// Time is exact: between two events (a job's start or end, a sample) the GPU's time is split
// equally between the jobs on it then. Energy is known per sample interval; each job is charged
// the interval's rate for the share of the interval it accrued (pending), and the time since the
// last sample at the latest rate when it ends.
type gpuMeter struct {
	mu   sync.Mutex
	last time.Time // the last event: time shares are accrued up to here
	open []*gpuShare

	sampled        bool
	at             time.Time // the last sample
	counter, power float64   // its energy counter (mJ) and power (W); NA when not read
	rate           float64   // the latest measured rate (W) for the time since the last sample; NA: none
	rateIntegrated bool      // that rate came from power readings, not the counter
}

// gpuShare is one job's account on one GPU.
type gpuShare struct {
	m           *gpuMeter
	pids        func() []int32 // the job's service processes, to find them in the GPU's process list
	pending     float64        // seconds of share not yet charged energy
	seconds     float64        // GPU-seconds
	joules      float64
	integrated  bool // some of the energy came from power readings
	unmeasured  bool // some of the time had no energy figure at all
	shared      bool // another job ran on the GPU meanwhile
	peakDevice  float64
	peakProcess float64 // the job's service processes' own GPU memory, where the GPU lists them
}

func newGPUMeter() *gpuMeter {
	return &gpuMeter{counter: gpu.NA, power: gpu.NA, rate: gpu.NA}
}

// accrue splits the time since the last event between the open shares.
func (m *gpuMeter) accrue(t time.Time) {
	if !t.After(m.last) {
		return // an event stamped before one already seen (a sample read just before a claim)
	}
	if n := len(m.open); n > 0 {
		d := t.Sub(m.last).Seconds() / float64(n)
		for _, sh := range m.open {
			sh.pending += d
			sh.seconds += d
		}
	}
	m.last = t
}

func (m *gpuMeter) begin(now time.Time, pids func() []int32) *gpuShare {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.accrue(now)
	sh := &gpuShare{m: m, pids: pids, peakDevice: gpu.NA, peakProcess: gpu.NA}
	m.open = append(m.open, sh)
	if len(m.open) > 1 {
		for _, o := range m.open {
			o.shared = true
		}
	}
	return sh
}

func (m *gpuMeter) end(sh *gpuShare, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !slices.Contains(m.open, sh) {
		return
	}
	m.accrue(now)
	sh.charge(m.rate, m.rateIntegrated)
	m.open = slices.DeleteFunc(m.open, func(o *gpuShare) bool { return o == sh })
}

// charge bills the share's pending time at a rate (W).
func (sh *gpuShare) charge(rate float64, integrated bool) {
	if sh.pending == 0 {
		return
	}
	if gpu.IsNA(rate) {
		sh.unmeasured = true
	} else {
		sh.joules += sh.pending * rate
		sh.integrated = sh.integrated || integrated
	}
	sh.pending = 0
}

// sample closes a sample interval: its rate comes from the energy counter's difference when
// both ends have one, else from the power readings (trapezoids), else from the previous rate.
func (m *gpuMeter) sample(at time.Time, r gpu.Reading) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.accrue(at)
	rate, integrated := gpu.NA, true
	if dt := at.Sub(m.at).Seconds(); m.sampled && dt > 0 {
		switch {
		case !gpu.IsNA(r.EnergyMJ) && !gpu.IsNA(m.counter) && r.EnergyMJ >= m.counter: // a lower value: the driver reloaded
			rate, integrated = (r.EnergyMJ-m.counter)/1000/dt, false
		case !gpu.IsNA(r.PowerW) && !gpu.IsNA(m.power):
			rate = (r.PowerW + m.power) / 2
		}
	}
	if gpu.IsNA(rate) && !gpu.IsNA(r.PowerW) {
		rate = r.PowerW
	}
	if gpu.IsNA(rate) && !gpu.IsNA(m.rate) { // a reading missed: the interval goes at the last rate
		rate = m.rate
	}
	for _, sh := range m.open {
		sh.charge(rate, integrated)
		if !gpu.IsNA(r.MemoryUsedMB) {
			sh.peakDevice = maxKnown(sh.peakDevice, r.MemoryUsedMB)
		}
		if own, ok := processMemory(r.Processes, sh.pids()); ok {
			sh.peakProcess = maxKnown(sh.peakProcess, own)
		}
	}
	m.sampled, m.at, m.counter, m.power = true, at, r.EnergyMJ, r.PowerW
	// The time until the next sample is charged, if a job ends first, at the counter's last rate
	// or else at the power just read.
	switch {
	case !integrated:
		m.rate, m.rateIntegrated = rate, false
	case !gpu.IsNA(r.PowerW):
		m.rate, m.rateIntegrated = r.PowerW, true
	default:
		m.rate, m.rateIntegrated = rate, true
	}
}

// processMemory sums the GPU memory of the listed processes that belong to the job's service.
// Inside a container the GPU lists host pids, which match none of ours: then it reports false.
func processMemory(procs []gpu.Process, pids []int32) (float64, bool) {
	if len(procs) == 0 || len(pids) == 0 {
		return 0, false
	}
	var sum float64
	found := false
	for _, p := range procs {
		if slices.Contains(pids, int32(p.PID)) && !gpu.IsNA(p.MemoryMB) {
			sum += p.MemoryMB
			found = true
		}
	}
	return sum, found
}

func maxKnown(a, b float64) float64 {
	if gpu.IsNA(a) {
		return b
	}
	return max(a, b)
}
