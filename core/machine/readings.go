package machine

import (
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/core/supervisor"
	"github.com/emp-job-queue/machine/gpu"
)

// serviceReading is a supervisor's status as the state store keeps it.
func serviceReading(st supervisor.Status) state.Service {
	return state.Service{
		Name: st.Name, State: string(st.State), Ready: st.State == supervisor.Ready, Errored: st.State == supervisor.Errored,
		PM2Status: st.PM2Status(), PID: st.PID, Restarts: st.Restarts, StartedAt: st.StartedAt, Port: st.Port, GPU: st.GPU,
		Adopted: st.Adopted, LastExit: st.LastExit, Error: st.Error, RSSMB: st.RSSMB, Command: st.Command, Probe: st.Probe,
		Exits: exits(st.Exits),
	}
}

func exits(in []supervisor.Exit) []state.Exit {
	var out []state.Exit
	for _, e := range in {
		out = append(out, state.Exit{At: e.At, Reason: e.Reason})
	}
	return out
}

// telemetry is a sampler's snapshot as the state store keeps it.
func telemetry(t gpu.Snapshot) state.Telemetry {
	out := state.Telemetry{At: t.At, Unhealthy: t.Unhealthy, Host: state.Host{
		CPUPercent: t.Host.CPUPercent, CPUCores: t.Host.CPUCores, MemUsedMB: t.Host.MemUsedMB, MemTotalMB: t.Host.MemTotalMB,
		DiskPath: t.Host.DiskPath, DiskUsedGB: t.Host.DiskUsedGB, DiskTotalGB: t.Host.DiskTotalGB,
	}}
	for _, r := range t.Services {
		out.Services = append(out.Services, state.ServiceLoad{Name: r.Name, CPUPercent: r.CPUPercent, RSSMB: r.RSSMB})
	}
	for _, r := range t.GPUs {
		out.GPUs = append(out.GPUs, state.GPU{
			Index: r.Index, UUID: r.UUID, Name: r.Name, MIG: r.MIG, UtilGPU: r.UtilGPU, UtilMemory: r.UtilMemory,
			MemoryUsedMB: r.MemoryUsedMB, MemoryTotalMB: r.MemoryTotalMB, TemperatureC: r.TemperatureC, PowerW: r.PowerW,
			PowerLimitW: r.PowerLimitW, FanPct: r.FanPct, SMClockMHz: r.SMClockMHz, MemClockMHz: r.MemClockMHz,
			PState: r.PState, EncoderUtil: r.EncoderUtil, DecoderUtil: r.DecoderUtil, EnergyMJ: r.EnergyMJ,
			Processes: processes(r.Processes),
		})
	}
	return out
}

func processes(in []gpu.Process) []state.GPUProcess {
	var out []state.GPUProcess
	for _, p := range in {
		out = append(out, state.GPUProcess{PID: p.PID, MemoryMB: p.MemoryMB})
	}
	return out
}
