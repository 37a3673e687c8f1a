package gpu

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// Fake is a deterministic source for machines without GPUs (tests, CI, the embedded demo).
// Each GPU's utilization, memory, temperature and power follow its activity, which the machine
// sets from the jobs running on it; the n-th reading of a GPU is always the same for the same
// activity. Power and memory are functions of the activity alone (FakePowerW,
// FakeMemoryUsedMB), and the energy counter integrates that power over the source's clock, so a
// test can compute the exact energy and memory a job should be charged.
type Fake struct {
	mu       sync.Mutex
	devices  []Device
	activity func() map[int]float64 // GPU index → 0 idle … 1 fully busy; absent: idle
	ticks    []int
	failures chan HealthEvent
	watchErr chan error // the next WatchHealth calls fail with these
	now      func() time.Time
	counter  bool        // the GPUs have a total-energy counter
	energyMJ []float64   // each GPU's counter
	lastRead []time.Time // when each GPU's counter last advanced
}

// FakeEnergyBaseMJ is where the fake's energy counters start, as a counter since driver load
// would: a job's energy is the counter's difference, never its value.
const FakeEnergyBaseMJ = 5e9

// FakePowerW is the fake GPUs' power draw at an activity (0 idle … 1 fully busy).
func FakePowerW(activity float64) float64 { return 60 + 240*clamp01(activity) }

// FakeMemoryUsedMB is the fake GPUs' memory in use at an activity, for a GPU of totalMB.
func FakeMemoryUsedMB(totalMB, activity float64) float64 {
	return math.Round(totalMB * (0.03 + 0.6*clamp01(activity)))
}

func clamp01(v float64) float64 { return math.Max(0, math.Min(1, v)) }

// NewFake returns a fake source of count GPUs of the given model and memory.
func NewFake(count int, model string, memoryGB float64) *Fake {
	if model == "" {
		model = "Simulated GPU"
	}
	if memoryGB <= 0 {
		memoryGB = 24
	}
	f := &Fake{activity: func() map[int]float64 { return nil }, ticks: make([]int, count), failures: make(chan HealthEvent, 16),
		watchErr: make(chan error, 16),
		now:      time.Now, counter: true, energyMJ: make([]float64, count), lastRead: make([]time.Time, count)}
	for i := range count {
		f.devices = append(f.devices, Device{
			Index: i, Name: model, MemoryTotalMB: memoryGB * 1024,
			UUID: fmt.Sprintf("GPU-fake0000-0000-0000-0000-%012d", i),
		})
	}
	return f
}

// SetActivity sets where the GPUs' activity comes from; it is asked once per Read.
func (f *Fake) SetActivity(fn func() map[int]float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.activity = fn
}

// SetClock sets the clock the energy counters advance by (time.Now by default).
func (f *Fake) SetClock(now func() time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = now
}

// SetEnergyCounter says whether the GPUs have a total-energy counter (they do by default, as
// Volta and newer GPUs have); without one, EnergyMJ reads NA.
func (f *Fake) SetEnergyCounter(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counter = on
}

// Fail makes the next health watch report the GPU unhealthy, as an XID error would.
func (f *Fake) Fail(index int, reason string) {
	f.failures <- HealthEvent{Index: index, UUID: f.devices[index].UUID, Reason: reason}
}

// Name implements Source.
func (f *Fake) Name() string { return "fake" }

// Devices implements Source.
func (f *Fake) Devices() []Device { return append([]Device(nil), f.devices...) }

// Read implements Source.
func (f *Fake) Read(context.Context) ([]Reading, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Reading, len(f.devices))
	activity := f.activity()
	now := f.now()
	for i, d := range f.devices {
		t := float64(f.ticks[i])
		f.ticks[i]++
		a := clamp01(activity[i])
		power := FakePowerW(a)
		// The counter advances at the power of this reading over the time since the last one.
		if f.lastRead[i].IsZero() {
			f.energyMJ[i] = FakeEnergyBaseMJ
		} else if dt := now.Sub(f.lastRead[i]).Seconds(); dt > 0 {
			f.energyMJ[i] += power * dt * 1000
		}
		f.lastRead[i] = now
		energy := NA
		if f.counter {
			energy = f.energyMJ[i]
		}
		wave := 0.5 + 0.5*math.Sin(t*0.7+float64(i))
		util := a*(78+18*wave) + (1-a)*(1+2*wave)
		pstate := 8.0
		if a > 0 {
			pstate = 0
		}
		out[i] = Reading{
			Device:       d,
			UtilGPU:      round1(util),
			UtilMemory:   round1(util * 0.6),
			MemoryUsedMB: FakeMemoryUsedMB(d.MemoryTotalMB, a),
			TemperatureC: math.Round(31 + util*0.45),
			PowerW:       power,
			PowerLimitW:  450,
			EnergyMJ:     energy,
			FanPct:       math.Round(30 + util*0.5),
			SMClockMHz:   math.Round(210 + a*2310),
			MemClockMHz:  math.Round(405 + a*10096),
			PState:       pstate,
			EncoderUtil:  0,
			DecoderUtil:  0,
		}
	}
	return out, nil
}

// WatchHealth implements Source: it reports the failures injected with Fail, and ends with
// the errors injected with FailWatch.
func (f *Fake) WatchHealth(ctx context.Context, events chan<- HealthEvent) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-f.watchErr:
			return err
		case ev := <-f.failures:
			select {
			case events <- ev:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// FailWatch makes the next n health watches end with err, as an NVML event set that breaks.
func (f *Fake) FailWatch(err error, n int) {
	for range n {
		f.watchErr <- err
	}
}

// Close implements Source.
func (f *Fake) Close() error { return nil }

func round1(v float64) float64 { return math.Round(v*10) / 10 }
