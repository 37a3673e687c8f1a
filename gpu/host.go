package gpu

import (
	"context"
	"sync"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/mem"
	"github.com/shirou/gopsutil/v4/process"
)

// HostReading is the host's load. Any float may be NA.
type HostReading struct {
	CPUPercent  float64
	CPUCores    int
	MemUsedMB   float64
	MemTotalMB  float64
	DiskPath    string
	DiskUsedGB  float64
	DiskTotalGB float64
}

// ServiceReading is one supervised service's process load.
type ServiceReading struct {
	Name       string
	PID        int
	RSSMB      float64
	CPUPercent float64
}

// Host reads host metrics through gopsutil.
type Host struct {
	workspace string
	cores     int

	mu    sync.Mutex
	procs map[int]*process.Process // kept so CPU percentages are measured between samples
}

// NewHost reads the host, with disk usage for the workspace path.
func NewHost(workspace string) *Host {
	cores, _ := cpu.Counts(true)
	return &Host{workspace: workspace, cores: cores, procs: map[int]*process.Process{}}
}

// Read samples CPU (since the previous Read), memory and the workspace disk.
func (h *Host) Read(ctx context.Context) HostReading {
	r := HostReading{CPUPercent: NA, CPUCores: h.cores, MemUsedMB: NA, MemTotalMB: NA, DiskPath: h.workspace, DiskUsedGB: NA, DiskTotalGB: NA}
	if p, err := cpu.PercentWithContext(ctx, 0, false); err == nil && len(p) == 1 {
		r.CPUPercent = p[0]
	}
	if vm, err := mem.VirtualMemoryWithContext(ctx); err == nil {
		r.MemUsedMB, r.MemTotalMB = float64(vm.Used)/(1<<20), float64(vm.Total)/(1<<20)
	}
	if h.workspace != "" {
		if du, err := disk.UsageWithContext(ctx, h.workspace); err == nil {
			r.DiskUsedGB, r.DiskTotalGB = float64(du.Used)/(1<<30), float64(du.Total)/(1<<30)
		}
	}
	return r
}

// Services reads each service process's RSS and CPU (since the previous call).
func (h *Host) Services(ctx context.Context, pids map[string]int) []ServiceReading {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[int]bool{}
	var out []ServiceReading
	for name, pid := range pids {
		seen[pid] = true
		r := ServiceReading{Name: name, PID: pid, RSSMB: NA, CPUPercent: NA}
		p := h.procs[pid]
		if p == nil {
			var err error
			if p, err = process.NewProcessWithContext(ctx, int32(pid)); err != nil {
				out = append(out, r)
				continue
			}
			h.procs[pid] = p
		}
		if mi, err := p.MemoryInfoWithContext(ctx); err == nil {
			r.RSSMB = float64(mi.RSS) / (1 << 20)
		}
		if c, err := p.PercentWithContext(ctx, 0); err == nil {
			r.CPUPercent = c
		}
		out = append(out, r)
	}
	for pid := range h.procs {
		if !seen[pid] {
			delete(h.procs, pid)
		}
	}
	return out
}
