//go:build cgo

package gpu_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/emp-job-queue/machine/gpu"
)

// h200 is the go-nvml DGX H200 mock with every method our source calls stubbed: the mocks
// panic on any method left unset. GPU 2 has MIG enabled; GPU 3 does not support fan readings.
func h200(t testing.TB) (*server.Server, chan nvml.EventData) {
	t.Helper()
	srv := dgxh200.New()
	events := make(chan nvml.EventData, 4)
	for i, d := range srv.Devices {
		dev := d.(*server.Device)
		idx := i
		if idx == 2 {
			dev.MigMode = nvml.DEVICE_MIG_ENABLE
		}
		dev.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
			total := uint64(144384) << 20
			return nvml.Memory{Total: total, Used: uint64(1000*(idx+1)) << 20, Free: total - uint64(1000*(idx+1))<<20}, nvml.SUCCESS
		}
		dev.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			if dev.MigMode == nvml.DEVICE_MIG_ENABLE {
				return nvml.Utilization{}, nvml.ERROR_NOT_SUPPORTED
			}
			return nvml.Utilization{Gpu: uint32(10 * idx), Memory: 5}, nvml.SUCCESS
		}
		dev.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 40 + uint32(idx), nvml.SUCCESS }
		dev.GetPowerUsageFunc = func() (uint32, nvml.Return) { return 250500, nvml.SUCCESS }
		dev.GetEnforcedPowerLimitFunc = func() (uint32, nvml.Return) { return 700000, nvml.SUCCESS }
		dev.GetTotalEnergyConsumptionFunc = func() (uint64, nvml.Return) {
			if idx == 3 { // a GPU without the counter (pre-Volta)
				return 0, nvml.ERROR_NOT_SUPPORTED
			}
			return 123456789 + uint64(idx), nvml.SUCCESS
		}
		dev.GetFanSpeedFunc = func() (uint32, nvml.Return) {
			if idx == 3 {
				return 0, nvml.ERROR_NOT_SUPPORTED
			}
			return 55, nvml.SUCCESS
		}
		dev.GetClockInfoFunc = func(c nvml.ClockType) (uint32, nvml.Return) {
			if c == nvml.CLOCK_SM {
				return 1980, nvml.SUCCESS
			}
			return 2619, nvml.SUCCESS
		}
		dev.GetPerformanceStateFunc = func() (nvml.Pstates, nvml.Return) { return nvml.PSTATE_0, nvml.SUCCESS }
		dev.GetEncoderUtilizationFunc = func() (uint32, uint32, nvml.Return) { return 3, 167000, nvml.SUCCESS }
		dev.GetDecoderUtilizationFunc = func() (uint32, uint32, nvml.Return) { return 4, 167000, nvml.SUCCESS }
		dev.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
			return []nvml.ProcessInfo{{Pid: uint32(4000 + idx), UsedGpuMemory: 512 << 20}}, nvml.SUCCESS
		}
		dev.GetSupportedEventTypesFunc = func() (uint64, nvml.Return) {
			return nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError | nvml.EventTypeSingleBitEccError, nvml.SUCCESS
		}
		dev.RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.SUCCESS }
	}
	srv.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) {
		return &mock.EventSet{
			FreeFunc: func() nvml.Return { return nvml.SUCCESS },
			WaitFunc: func(timeout uint32) (nvml.EventData, nvml.Return) {
				select {
				case ev := <-events:
					return ev, nvml.SUCCESS
				case <-time.After(time.Duration(timeout) * time.Millisecond / 100):
					return nvml.EventData{}, nvml.ERROR_TIMEOUT
				}
			},
		}, nvml.SUCCESS
	}
	return srv, events
}

func TestNVMLReadings(t *testing.T) {
	srv, _ := h200(t)
	src, err := gpu.OpenNVML(srv)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	s := gpu.Summarize(src)
	if s.Count != 8 || s.Model != "NVIDIA H200 141GB HBM3e" || s.MemoryGB != 141 || s.Source != "nvml" {
		t.Errorf("summary = %+v", s)
	}
	rs, err := src.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r := rs[1]
	if r.UtilGPU != 10 || r.UtilMemory != 5 || r.MemoryUsedMB != 2000 || r.TemperatureC != 41 || r.PowerW != 250.5 ||
		r.PowerLimitW != 700 || r.FanPct != 55 || r.SMClockMHz != 1980 || r.MemClockMHz != 2619 || r.PState != 0 ||
		r.EncoderUtil != 3 || r.DecoderUtil != 4 || len(r.Processes) != 1 || r.Processes[0].PID != 4001 || r.Processes[0].MemoryMB != 512 {
		t.Errorf("GPU 1 reading = %+v", r)
	}
	if r.EnergyMJ != 123456790 {
		t.Errorf("GPU 1 energy counter = %v mJ, want 123456790", r.EnergyMJ)
	}
	if r.UUID == "" || r.MIG {
		t.Errorf("GPU 1 identity = %+v", r.Device)
	}
	mig := rs[2]
	if !mig.MIG || !gpu.IsNA(mig.UtilGPU) || !gpu.IsNA(mig.EncoderUtil) || mig.Processes != nil || mig.TemperatureC != 42 {
		t.Errorf("MIG GPU must show n/a utilization, not numbers: %+v", mig)
	}
	if !gpu.IsNA(rs[3].FanPct) || rs[3].TemperatureC != 43 {
		t.Errorf("unsupported fan must be n/a: %+v", rs[3])
	}
	if !gpu.IsNA(rs[3].EnergyMJ) || rs[2].EnergyMJ != 123456791 {
		t.Errorf("energy counter: unsupported must be n/a, MIG keeps the device counter: GPU 3 %v, GPU 2 %v", rs[3].EnergyMJ, rs[2].EnergyMJ)
	}
}

func TestNVMLHealthEvents(t *testing.T) {
	srv, events := h200(t)
	src, err := gpu.OpenNVML(srv)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan gpu.HealthEvent, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { src.WatchHealth(ctx, out); close(done) }()
	defer func() { cancel(); <-done }()

	events <- nvml.EventData{Device: srv.Devices[5], EventType: nvml.EventTypeXidCriticalError, EventData: 13} // application XID
	events <- nvml.EventData{Device: srv.Devices[4], EventType: nvml.EventTypeSingleBitEccError}               // corrected
	events <- nvml.EventData{Device: srv.Devices[6], EventType: nvml.EventTypeXidCriticalError, EventData: 79}
	events <- nvml.EventData{Device: srv.Devices[7], EventType: nvml.EventTypeDoubleBitEccError}
	var got []gpu.HealthEvent
	for len(got) < 2 {
		select {
		case ev := <-out:
			got = append(got, ev)
		case <-time.After(5 * time.Second):
			t.Fatalf("health events: %+v", got)
		}
	}
	if got[0].Index != 6 || got[0].Reason != "XID 79 critical error" || got[1].Index != 7 {
		t.Errorf("health events = %+v; want GPU 6 (XID 79) and GPU 7 (ECC) only", got)
	}
	select {
	case ev := <-out:
		t.Errorf("unexpected event %+v", ev)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestNVMLWithoutDriver(t *testing.T) {
	lib := &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}
	if _, err := gpu.OpenNVML(lib); !errors.Is(err, gpu.ErrNoNVML) {
		t.Errorf("OpenNVML without a driver = %v, want ErrNoNVML", err)
	}
}
