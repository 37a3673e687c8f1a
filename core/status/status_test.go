package status_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/plan"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/core/status"
)

func testPlan(t testing.TB) *plan.Plan {
	t.Helper()
	env := map[string]string{"MACHINE_ID": "box", "MACHINE_GPU_COUNT": "2", "WORKER_CONNECTORS": "simulation,mock,comfyui:1"}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMessageShape checks the machine:status message against the shape the monitor reads
// (PROTOCOL §5, emp-reference §5.1), key by key, as JSON.
func TestMessageShape(t *testing.T) {
	p := testPlan(t)
	var slots []state.Slot
	for _, s := range p.Slots {
		slots = append(slots, state.Slot{ID: s.ID, Connector: s.Connector, GPU: s.GPU})
	}
	st := state.New("box", "", slots)
	st.SetBroker("redis://x", false)
	st.BrokerReachable(true, nil)
	st.SetPhase(state.Ready)
	st.JobClaimed("box-worker-simulation-1", "job-7", "simulation")

	raw, err := json.Marshal(status.Build(p, st.Snapshot(), status.Periodic, "http://localhost:9090/health", "v1", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"machine_id", "timestamp", "update_type", "structure", "status", "health_url"} {
		if _, ok := m[k]; !ok {
			t.Errorf("message lacks %s", k)
		}
	}
	if m["machine_id"] != "box" || m["update_type"] != "periodic" || m["health_url"] != "http://localhost:9090/health" {
		t.Errorf("header fields: %v %v %v", m["machine_id"], m["update_type"], m["health_url"])
	}
	structure := m["structure"].(map[string]any)
	if structure["gpu_count"] != 2.0 {
		t.Errorf("gpu_count = %v", structure["gpu_count"])
	}
	caps, _ := structure["capabilities"].([]any)
	if len(caps) != 3 { // simulation, mock_test, comfyui
		t.Errorf("capabilities = %v", caps)
	}
	workers := structure["workers"].(map[string]any)
	if len(workers) != len(p.Slots) {
		t.Fatalf("structure.workers has %d entries, want one per slot (%d)", len(workers), len(p.Slots))
	}
	w := workers["box-worker-simulation-1"].(map[string]any)
	for k, v := range map[string]any{"worker_id": "box-worker-simulation-1", "gpu_id": 1.0, "worker_type": "simulation",
		"resource_binding": "gpu", "pm2_name": "redis-worker-simulation-gpu1"} {
		if w[k] != v {
			t.Errorf("structure.workers[].%s = %v, want %v", k, w[k], v)
		}
	}
	if svcs, _ := w["services"].([]any); len(svcs) != 1 || svcs[0] != "simulation" {
		t.Errorf("structure.workers[].services = %v", w["services"])
	}
	if c, _ := w["connectors"].([]any); len(c) != 1 || c[0] != "simulation" {
		t.Errorf("structure.workers[].connectors = %v", w["connectors"])
	}
	if _, ok := structure["services"].(map[string]any)["box-worker-simulation-1.simulation"]; !ok {
		t.Error("structure.services lacks <worker_id>.<service>")
	}

	stat := m["status"].(map[string]any)
	machine := stat["machine"].(map[string]any)
	if machine["phase"] != "ready" || machine["uptime_ms"] == nil {
		t.Errorf("status.machine = %v", machine)
	}
	busy := stat["workers"].(map[string]any)["box-worker-simulation-1"].(map[string]any)
	for k, v := range map[string]any{"is_connected": true, "status": "busy", "current_job_id": "job-7", "version": "v1"} {
		if busy[k] != v {
			t.Errorf("status.workers[busy].%s = %v, want %v", k, busy[k], v)
		}
	}
	if _, ok := busy["last_activity"].(float64); !ok {
		t.Errorf("last_activity = %v, want ms", busy["last_activity"])
	}
	idle := stat["workers"].(map[string]any)["box-worker-simulation-0"].(map[string]any)
	if idle["status"] != "idle" || idle["current_job_id"] != nil {
		t.Errorf("idle worker = %v", idle)
	}
	svcs := stat["services"].(map[string]any)
	sim := svcs["box-worker-simulation-0.simulation"].(map[string]any)
	for k, v := range map[string]any{"status": "active", "health": "healthy", "pm2_status": "online",
		"worker_id": "box-worker-simulation-0", "service_type": "simulation"} {
		if sim[k] != v {
			t.Errorf("status.services[sim].%s = %v, want %v", k, sim[k], v)
		}
	}
	// A planned service the supervisor reports nothing of: not found, never healthy.
	comfy := svcs["box-worker-comfyui-0.comfyui"].(map[string]any)
	if comfy["pm2_status"] != "not_found" || comfy["health"] == "healthy" {
		t.Errorf("unsupervised service reported as %v", comfy)
	}
}

func TestPhasesTheMonitorKnows(t *testing.T) {
	p := testPlan(t)
	for phase, want := range map[state.Phase]string{state.Starting: "starting", state.Ready: "ready",
		state.Draining: "shutdown", state.Shutdown: "shutdown"} {
		st := state.New("box", "", nil)
		st.SetPhase(phase)
		if got := status.Build(p, st.Snapshot(), status.Periodic, "", "", time.Now()).Status.Machine.Phase; got != want {
			t.Errorf("phase %s reported as %q, want %q", phase, got, want)
		}
	}
}
