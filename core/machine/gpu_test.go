package machine_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/machine"
	"github.com/emp-job-queue/machine/gpu"
)

func TestUnhealthyGPUStopsItsSlot(t *testing.T) {
	fake := gpu.NewFake(2, "Sim", 24)
	h := startWith(t, map[string]string{"WORKER_CONNECTORS": "simulation", "MACHINE_GPU_SAMPLE_INTERVAL_MS": "100"},
		machine.Options{GPUs: fake})
	fake.Fail(0, "XID 79 critical error")
	h.waitFor("GPU 0 to be reported out of service", func() bool {
		return h.m.Store().Snapshot().Telemetry.Unhealthy[0] != ""
	})
	var ids []string
	for range 6 {
		ids = append(ids, h.submit("simulation", `{"duration_ms":20}`))
	}
	for _, id := range ids {
		h.waitFor("job "+id, func() bool { return h.status(id) == "completed" })
	}
	for _, s := range h.m.Store().Snapshot().Slots {
		if s.GPU == 0 && s.Completed != 0 {
			t.Errorf("slot %s on the failed GPU ran %d jobs", s.ID, s.Completed)
		}
		if s.GPU == 1 && s.Completed != 6 {
			t.Errorf("slot %s on the healthy GPU ran %d jobs, want 6", s.ID, s.Completed)
		}
	}
	resp, err := http.Get("http://" + h.m.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `machine_gpu_healthy{gpu="0",model="Sim"} 0`) ||
		!strings.Contains(string(body), `machine_gpu_healthy{gpu="1",model="Sim"} 1`) {
		t.Errorf("/metrics does not show GPU health:\n%s", grep(string(body), "machine_gpu_healthy"))
	}
}

func TestStatusAttributesJobsToGPUs(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation", "MACHINE_GPU_SAMPLE_INTERVAL_MS": "100"})
	// Longer than the wait below, so the job is still running however slowly a loaded CI box
	// gets to it (the drain timeout ends it at shutdown).
	id := h.submit("simulation", `{"duration_ms":600000,"steps":6000}`)
	type gpuView struct {
		Index int      `json:"index"`
		Util  *float64 `json:"utilization_percent"`
		Jobs  []string `json:"jobs"`
	}
	var busy, idle gpuView
	h.waitFor("a GPU to show the job and its load", func() bool {
		resp, err := http.Get("http://" + h.m.HTTPAddr() + "/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct {
			GPUs []gpuView `json:"gpus"`
		}
		if json.NewDecoder(resp.Body).Decode(&st) != nil || len(st.GPUs) != 2 {
			return false
		}
		for _, g := range st.GPUs {
			if len(g.Jobs) == 1 && g.Jobs[0] == id {
				busy = g
			} else {
				idle = g
			}
		}
		return busy.Util != nil && *busy.Util > 50
	})
	if idle.Util == nil || *idle.Util > 10 || len(idle.Jobs) != 0 {
		t.Errorf("idle GPU = %+v", idle)
	}
}
