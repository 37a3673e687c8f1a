package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/mem"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/machine"
	"github.com/emp-job-queue/machine/core/plan"
	"github.com/emp-job-queue/machine/core/resources"
)

// planWithRequirements is `machine plan --json`: the plan's fields, and what it needs.
type planWithRequirements struct {
	*plan.Plan
	Requirements resources.Report `json:"requirements"`
}

// requirements measures the box (the GPU source, gopsutil, the container's limits) and
// estimates what the plan needs from it. MACHINE_RAM_GB and MACHINE_CPU_CORES, when set, stand
// for the box: a plan can be checked for another machine.
func requirements(cfg *config.Config, p *plan.Plan) (resources.Report, error) {
	models, err := resources.Models(cfg)
	if err != nil {
		return resources.Report{}, err
	}
	box := resources.Box{Simulated: cfg.SimulatedGPUs, RAMMB: ramMB(), CPUCores: cpuCores(), DiskFreeMB: diskFreeMB(cfg.ComfyUI.Dir),
		PortFree: portFree}
	if _, set := os.LookupEnv("MACHINE_RAM_GB"); set {
		box.RAMMB = cfg.RAMGB * 1024
	}
	if _, set := os.LookupEnv("MACHINE_CPU_CORES"); set {
		box.CPUCores = float64(cfg.CPUCores)
	}
	src, _, err := machine.OpenGPUs(cfg)
	if err != nil {
		return resources.Report{}, err
	}
	for _, d := range src.Devices() {
		box.GPUMemoryMB = append(box.GPUMemoryMB, d.MemoryTotalMB)
	}
	if err := src.Close(); err != nil {
		return resources.Report{}, err
	}
	return resources.Calculate(cfg, p, models, box), nil
}

// ramMB is the host's memory, or the container's limit when that is lower (cgroup v2).
func ramMB() float64 {
	total := math.NaN()
	if v, err := mem.VirtualMemory(); err == nil {
		total = float64(v.Total) / (1 << 20)
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if limit, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64); err == nil {
			total = min(total, limit/(1<<20)) // "max" does not parse: no limit
		}
	}
	return total
}

// cpuCores is the CPUs the process may use, or the container's quota when that is lower.
func cpuCores() float64 {
	cores := float64(runtime.NumCPU())
	if b, err := os.ReadFile("/sys/fs/cgroup/cpu.max"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			quota, err1 := strconv.ParseFloat(f[0], 64)
			period, err2 := strconv.ParseFloat(f[1], 64)
			if err1 == nil && err2 == nil && period > 0 {
				cores = min(cores, quota/period)
			}
		}
	}
	return cores
}

// diskFreeMB is the free space of the filesystem dir is (or will be) on.
func diskFreeMB(dir string) float64 {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			u, err := disk.Usage(d)
			if err != nil {
				return math.NaN()
			}
			return float64(u.Free) / (1 << 20)
		}
		if d == filepath.Dir(d) {
			return math.NaN()
		}
	}
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

func printRequirements(w io.Writer, r resources.Report) {
	amount := func(a resources.Amount, unit func(float64) string) (string, string) {
		have := "?"
		if a.Have != nil {
			have = unit(*a.Have)
		}
		return unit(a.Need), have
	}
	gb := func(mb float64) string { return fmt.Sprintf("%.1f GB", mb/1024) }
	cores := func(c float64) string { return fmt.Sprintf("%.1f", c) }
	fmt.Fprintln(w, "\nREQUIREMENTS (estimates)")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RESOURCE\tFOR\tNEED\tHAVE")
	for _, g := range r.GPUs {
		need, have := amount(g.VRAMMB, gb)
		fmt.Fprintf(tw, "GPU %d memory\t%s\t%s\t%s\n", g.Index, strings.Join(g.Services, ","), need, have)
	}
	need, have := amount(r.RAMMB, gb)
	fmt.Fprintf(tw, "RAM\tmachine and services\t%s\t%s\n", need, have)
	need, have = amount(r.DiskMB, gb)
	fmt.Fprintf(tw, "disk\tstill to install\t%s\t%s free\n", need, have)
	need, have = amount(r.CPU, cores)
	fmt.Fprintf(tw, "CPU cores\tmachine and services\t%s\t%s\n", need, have)
	for _, pt := range r.Ports {
		state := "not checked"
		if pt.Free != nil && *pt.Free {
			state = "free"
		} else if pt.Free != nil {
			state = "in use"
		}
		fmt.Fprintf(tw, "port %d\t%s\t\t%s\n", pt.Port, pt.Owner, state)
	}
	tw.Flush()
	if len(r.Findings) > 0 {
		fmt.Fprintln(w)
	}
	for _, f := range r.Findings {
		label := "warning"
		if f.Refuse {
			label = "refused"
		}
		fmt.Fprintf(w, "%s: %s\n", label, f.Message)
	}
}

// refused is the error `machine plan` exits with when the box cannot run the configuration.
func refused(r resources.Report) error {
	n := r.Refusals()
	if n == 0 {
		return nil
	}
	var first string
	for _, f := range r.Findings {
		if f.Refuse {
			first = f.Message
			break
		}
	}
	if n == 1 {
		return errors.New("this box cannot run the configuration: " + first)
	}
	return fmt.Errorf("this box cannot run the configuration (%d problems, listed in the plan); first: %s", n, first)
}
