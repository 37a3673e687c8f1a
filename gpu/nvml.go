//go:build cgo

package gpu

import (
	"context"
	"errors"
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVMLAvailable is true in builds with cgo, where the NVML source exists.
const NVMLAvailable = true

// NVML reads GPUs through NVIDIA's management library. The library is injected (nvml.New() on
// real hardware, a go-nvml mock in tests) and every return code is checked: a reading the
// device does not support is NA, never a made-up number.
type NVML struct {
	lib     nvml.Interface
	handles []nvml.Device
	devices []Device
}

// OpenNVML initialises the library and takes the inventory. With no driver it fails with
// ERROR_LIBRARY_NOT_FOUND, which OpenNVML reports as ErrNoNVML.
func OpenNVML(lib nvml.Interface) (*NVML, error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND || ret == nvml.ERROR_DRIVER_NOT_LOADED {
			return nil, fmt.Errorf("%w: %s", ErrNoNVML, nvml.ErrorString(ret))
		}
		return nil, fmt.Errorf("initialise NVML: %s", nvml.ErrorString(ret))
	}
	n := &NVML{lib: lib}
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		lib.Shutdown()
		return nil, fmt.Errorf("count GPUs through NVML: %s", nvml.ErrorString(ret))
	}
	for i := range count {
		h, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			lib.Shutdown()
			return nil, fmt.Errorf("open GPU %d through NVML: %s", i, nvml.ErrorString(ret))
		}
		d := Device{Index: i, MemoryTotalMB: NA}
		if name, ret := h.GetName(); ret == nvml.SUCCESS {
			d.Name = name
		}
		if uuid, ret := h.GetUUID(); ret == nvml.SUCCESS {
			d.UUID = uuid
		}
		if mem, ret := h.GetMemoryInfo(); ret == nvml.SUCCESS {
			d.MemoryTotalMB = float64(mem.Total) / (1 << 20)
		}
		if cur, _, ret := h.GetMigMode(); ret == nvml.SUCCESS && cur == nvml.DEVICE_MIG_ENABLE {
			d.MIG = true
		}
		n.handles = append(n.handles, h)
		n.devices = append(n.devices, d)
	}
	return n, nil
}

// ErrNoNVML says there is no NVIDIA driver on this host.
var ErrNoNVML = errors.New("no NVIDIA driver (libnvidia-ml.so.1) on this host")

// Name implements Source.
func (n *NVML) Name() string { return "nvml" }

// Devices implements Source.
func (n *NVML) Devices() []Device { return append([]Device(nil), n.devices...) }

func u32(v uint32, ret nvml.Return) float64 {
	if ret != nvml.SUCCESS {
		return NA
	}
	return float64(v)
}

// Read implements Source. Under MIG, per-GPU utilization, encoder/decoder and process figures
// are n/a: NVML does not report them for the whole GPU, and guessing would mislead.
func (n *NVML) Read(ctx context.Context) ([]Reading, error) {
	out := make([]Reading, len(n.handles))
	for i, h := range n.handles {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r := Reading{Device: n.devices[i], UtilGPU: NA, UtilMemory: NA, MemoryUsedMB: NA, EncoderUtil: NA, DecoderUtil: NA, PState: NA, EnergyMJ: NA}
		if mem, ret := h.GetMemoryInfo(); ret == nvml.SUCCESS {
			r.MemoryUsedMB = float64(mem.Used) / (1 << 20)
		}
		r.TemperatureC = u32(h.GetTemperature(nvml.TEMPERATURE_GPU))
		r.PowerW = u32(h.GetPowerUsage()) / 1000
		r.PowerLimitW = u32(h.GetEnforcedPowerLimit()) / 1000
		// The energy counter is whole-device, so it holds under MIG too; GPUs before Volta
		// answer NOT_SUPPORTED and the job's energy is integrated from power instead.
		if e, ret := h.GetTotalEnergyConsumption(); ret == nvml.SUCCESS {
			r.EnergyMJ = float64(e)
		}
		r.FanPct = u32(h.GetFanSpeed())
		r.SMClockMHz = u32(h.GetClockInfo(nvml.CLOCK_SM))
		r.MemClockMHz = u32(h.GetClockInfo(nvml.CLOCK_MEM))
		if p, ret := h.GetPerformanceState(); ret == nvml.SUCCESS && p != nvml.PSTATE_UNKNOWN {
			r.PState = float64(p)
		}
		if !r.MIG {
			if u, ret := h.GetUtilizationRates(); ret == nvml.SUCCESS {
				r.UtilGPU, r.UtilMemory = float64(u.Gpu), float64(u.Memory)
			}
			if v, _, ret := h.GetEncoderUtilization(); ret == nvml.SUCCESS {
				r.EncoderUtil = float64(v)
			}
			if v, _, ret := h.GetDecoderUtilization(); ret == nvml.SUCCESS {
				r.DecoderUtil = float64(v)
			}
			if procs, ret := h.GetComputeRunningProcesses(); ret == nvml.SUCCESS {
				for _, p := range procs {
					r.Processes = append(r.Processes, Process{PID: p.Pid, MemoryMB: float64(p.UsedGpuMemory) / (1 << 20)})
				}
			}
		}
		out[i] = r
	}
	return out, nil
}

// applicationXIDs are XID errors caused by an application, not the GPU (the NVIDIA device
// plugin skips the same ones): they do not take the GPU out of service.
var applicationXIDs = map[uint64]bool{13: true, 31: true, 43: true, 45: true, 68: true, 109: true}

// WatchHealth implements Source with an NVML event set: critical XID errors and uncorrectable
// (double-bit) ECC errors mark the GPU unhealthy.
func (n *NVML) WatchHealth(ctx context.Context, events chan<- HealthEvent) error {
	set, ret := n.lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		return fmt.Errorf("create an NVML event set: %s", nvml.ErrorString(ret))
	}
	defer set.Free()
	const wanted = nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError
	registered := 0
	for _, h := range n.handles {
		supported, ret := h.GetSupportedEventTypes()
		if ret != nvml.SUCCESS || supported&wanted == 0 {
			continue
		}
		if h.RegisterEvents(supported&wanted, set) == nvml.SUCCESS {
			registered++
		}
	}
	if registered == 0 {
		return nil // no GPU reports these events: nothing to watch
	}
	for ctx.Err() == nil {
		ev, ret := set.Wait(1000)
		if ret == nvml.ERROR_TIMEOUT {
			continue
		}
		if ret != nvml.SUCCESS {
			return fmt.Errorf("wait for NVML events: %s", nvml.ErrorString(ret))
		}
		reason := ""
		switch {
		case ev.EventType == nvml.EventTypeXidCriticalError && !applicationXIDs[ev.EventData]:
			reason = fmt.Sprintf("XID %d critical error", ev.EventData)
		case ev.EventType == nvml.EventTypeDoubleBitEccError:
			reason = "uncorrectable (double-bit) ECC error"
		default:
			continue
		}
		for i, h := range n.handles {
			if uuid, ret := ev.Device.GetUUID(); ret == nvml.SUCCESS && uuid == n.devices[i].UUID || ev.Device == h {
				select {
				case events <- HealthEvent{Index: i, UUID: n.devices[i].UUID, Reason: reason}:
				case <-ctx.Done():
					return nil
				}
				break
			}
		}
	}
	return nil
}

// Close implements Source.
func (n *NVML) Close() error {
	if ret := n.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("shut NVML down: %s", nvml.ErrorString(ret))
	}
	return nil
}

// openNVMLLibrary opens the real library.
func openNVMLLibrary() (Source, error) { return OpenNVML(nvml.New()) }
