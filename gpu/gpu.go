// Package gpu reads the machine's GPUs: their inventory, their telemetry once a second, and
// health events that take a GPU out of service. Sources sit behind the small Source interface:
// NVML on real hardware (built with cgo), and a deterministic fake everywhere else, whose load
// follows the jobs the machine runs so the embedded demo looks alive.
package gpu

import (
	"context"
	"math"
)

// NA marks a reading a device cannot give: not supported, or meaningless under MIG. Readers
// show it as "n/a", never as a number.
var NA = math.NaN()

// IsNA reports whether a reading is NA.
func IsNA(v float64) bool { return math.IsNaN(v) }

// Device is a GPU as inventoried at start.
type Device struct {
	Index         int
	UUID          string
	Name          string
	MemoryTotalMB float64
	MIG           bool // MIG mode enabled: per-GPU utilization is n/a
}

// Reading is one sample of one GPU. Any float may be NA.
type Reading struct {
	Device
	UtilGPU      float64 // %
	UtilMemory   float64 // % of time the memory controller was busy
	MemoryUsedMB float64
	TemperatureC float64
	PowerW       float64
	PowerLimitW  float64
	FanPct       float64
	SMClockMHz   float64
	MemClockMHz  float64
	PState       float64 // 0 (max performance) … 15; NA when unknown
	EncoderUtil  float64 // %
	DecoderUtil  float64 // %
	Processes    []Process
	// EnergyMJ is the GPU's total-energy counter in millijoules since the driver loaded (NVML
	// nvmlDeviceGetTotalEnergyConsumption, Volta and newer); NA where the GPU has none.
	EnergyMJ float64
}

// Process is a process using a GPU, with the memory it holds. PIDs are host PIDs: inside a
// container they do not match ours, which is why jobs are attributed to GPUs from the plan.
type Process struct {
	PID      uint32
	MemoryMB float64
}

// HealthEvent says a GPU became unhealthy (an XID error, an uncorrectable ECC error).
type HealthEvent struct {
	Index  int
	UUID   string
	Reason string
}

// Source is where GPU readings come from.
type Source interface {
	// Name says what the source is, for logs and /status ("nvml", "fake").
	Name() string
	// Devices is the inventory, fixed at open.
	Devices() []Device
	// Read samples every device.
	Read(ctx context.Context) ([]Reading, error)
	// WatchHealth sends health events until ctx ends, then returns nil. A source without events
	// returns nil at once; one whose events cannot be read (any more) returns why, and the
	// sampler tries again.
	WatchHealth(ctx context.Context, events chan<- HealthEvent) error
	Close() error
}

// Summary is what the machine advertises from its GPUs.
type Summary struct {
	Count    int
	Model    string
	MemoryGB float64 // of the smallest GPU, so a requirement it passes holds on every slot
	Source   string
}

// Summarize describes the inventory of a source.
func Summarize(src Source) Summary {
	devs := src.Devices()
	s := Summary{Count: len(devs), Source: src.Name()}
	for i, d := range devs {
		gb := math.Round(d.MemoryTotalMB/1024*10) / 10
		if i == 0 || gb < s.MemoryGB {
			s.MemoryGB = gb
		}
		if i == 0 {
			s.Model = d.Name
		} else if d.Name != s.Model {
			s.Model = "mixed"
		}
	}
	return s
}
