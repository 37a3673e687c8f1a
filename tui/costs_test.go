package tui_test

import (
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/tui"
)

// The jobs pane shows each service's last hour (jobs, mean and p95 run time and energy) and the
// resource record of each recent job.
func TestJobCostsShown(t *testing.T) {
	snap := fixture()
	gpuS, whJob, mem, cpu := 12.5, 0.042, 2048.0, 0.3
	shared := false
	snap.Recent[1].Resources = &job.Resources{RunMS: 12500, GPUSeconds: &gpuS, GPUEnergyWh: &whJob,
		GPUEnergySource: job.EnergyCounter, GPUPeakMemoryMB: &mem, GPUMemoryShared: &shared, CPUSeconds: &cpu}
	snap.Recent[0].Resources = &job.Resources{RunMS: 2300, GPUEnergySource: job.EnergyNone,
		APIUsage: map[string]any{"prompt_tokens": 5.0, "completion_tokens": 3.0, "total_tokens": 8.0}}
	mean, p95 := 0.0351, 0.0612
	snap.Costs = []control.ServiceCost{
		{Service: "comfyui", Jobs: 118, RunMeanMS: 14200, RunP95MS: 31000, WhMean: &mean, WhP95: &p95, GPUSeconds: 1676},
		{Service: "openai_text", Jobs: 40, RunMeanMS: 2300, RunP95MS: 4100},
	}
	core := newFake()
	core.updates <- snap
	s := start(t, 160, 48, core, tui.Options{})
	out := s.waitFor("1h comfyui")
	for _, want := range []string{
		"1h comfyui       118 jobs  run 14.2s p95 31.0s  0.0351 Wh/job p95 0.0612  1676 GPU·s",
		"1h openai_text    40 jobs  run 2.3s p95 4.1s",
		"12.5 GPU·s 0.042 Wh 2.0G cpu 0.3s",
		"total_tokens 8",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("screen lacks %q:\n%s", want, out)
		}
	}
}
