package status_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
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

	raw, err := json.Marshal(status.Build(p, st.Snapshot(), status.Periodic, "http://localhost:9090/health", "v1", time.Now(), nil))
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
		if got := status.Build(p, st.Snapshot(), status.Periodic, "", "", time.Now(), nil).Status.Machine.Phase; got != want {
			t.Errorf("phase %s reported as %q, want %q", phase, got, want)
		}
	}
}

// The emp API writes a worker:{id} hash (120 s TTL) for every worker listed both in
// structure.workers and in status.workers (handleUnifiedMachineStatus). A slot that stopped,
// was removed, or idles while the machine drains is about to be deregistered, so it must not be
// listed in the structure; status.workers still says what became of it, with a real time.
func TestStoppingWorkersLeaveTheStructure(t *testing.T) {
	p := testPlan(t) // simulation-0, simulation-1 (GPUs 0, 1), mock-0, comfyui-0
	var slots []state.Slot
	for _, s := range p.Slots {
		slots = append(slots, state.Slot{ID: s.ID, Connector: s.Connector, GPU: s.GPU})
	}
	st := state.New("box", "", slots)
	st.BrokerReachable(true, nil)
	st.SetPhase(state.Ready)
	st.JobClaimed("box-worker-simulation-1", "job-7", "simulation")
	st.SlotStopped("box-worker-comfyui-0")
	removed := p.Slots[2].ID // mock
	st.RemoveSlots([]string{removed})
	lastJob := time.UnixMilli(1_700_000_000_000)

	m := status.Build(p, st.Snapshot(), status.Periodic, "", "v1", time.Now(), map[string]time.Time{removed: lastJob})
	listed := func() []string {
		var ids []string
		for id := range m.Structure.Workers {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		return ids
	}
	if got, want := listed(), []string{"box-worker-simulation-0", "box-worker-simulation-1"}; !slices.Equal(got, want) {
		t.Errorf("structure.workers = %v, want the slots that take jobs %v", got, want)
	}
	if len(m.Status.Workers) != len(p.Slots) {
		t.Errorf("status.workers has %d entries, want every planned slot (%d)", len(m.Status.Workers), len(p.Slots))
	}
	gone := m.Status.Workers[removed]
	if gone.Status != "offline" || gone.IsConnected || gone.CurrentJobID != nil || gone.LastActivity != lastJob.UnixMilli() {
		t.Errorf("removed worker reported as %+v, want offline, disconnected, last activity %d", gone, lastJob.UnixMilli())
	}
	if stopped := m.Status.Workers["box-worker-comfyui-0"]; stopped.Status != "offline" || stopped.IsConnected || stopped.LastActivity <= 0 {
		t.Errorf("stopped worker reported as %+v", stopped)
	}
	for key := range m.Status.Services {
		if !strings.HasPrefix(key, "box-worker-simulation-") {
			t.Errorf("status.services lists %s, a service of a worker not in the structure", key)
		}
	}

	// Draining: only the slot still finishing a job stays; at shutdown (every slot removed)
	// none does, and each worker's last activity is the one it had.
	st.SetPhase(state.Draining)
	m = status.Build(p, st.Snapshot(), status.EventDriven, "", "v1", time.Now(), nil)
	if got := listed(); !slices.Equal(got, []string{"box-worker-simulation-1"}) {
		t.Errorf("structure.workers while draining = %v, want only the busy slot", got)
	}
	seen := map[string]time.Time{}
	for _, sl := range st.Snapshot().Slots {
		seen[sl.ID] = sl.LastActivity
	}
	seen[removed] = lastJob
	st.RemoveSlots([]string{"box-worker-simulation-0", "box-worker-simulation-1", "box-worker-comfyui-0"})
	st.SetPhase(state.Shutdown)
	m = status.Build(p, st.Snapshot(), status.Shutdown, "", "v1", time.Now(), seen)
	if len(m.Structure.Workers) != 0 || len(m.Structure.Services) != 0 || m.Status.Machine.Phase != "shutdown" {
		t.Errorf("shutdown message lists %v in the structure, phase %q", listed(), m.Status.Machine.Phase)
	}
	for id, at := range seen {
		if w := m.Status.Workers[id]; w.Status != "offline" || w.LastActivity != at.UnixMilli() {
			t.Errorf("shutdown status of %s = %+v, want offline at %d", id, w, at.UnixMilli())
		}
	}
}

// A machine without GPUs: the monitor's MachineCard prints a stray "0" for gpu_count 0, and
// emp's aggregator numbers workers not bound to a GPU by their index.
func TestCPUOnlyShapes(t *testing.T) {
	env := map[string]string{"MACHINE_ID": "cpu", "MACHINE_GPU_COUNT": "0", "WORKER_CONNECTORS": "mock:2"}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var slots []state.Slot
	for _, s := range p.Slots {
		slots = append(slots, state.Slot{ID: s.ID, Connector: s.Connector, GPU: s.GPU})
	}
	st := state.New("cpu", "", slots)
	m := status.Build(p, st.Snapshot(), status.Periodic, "", "", time.Now(), nil)
	if m.Structure.GPUCount != 1 {
		t.Errorf("gpu_count = %d, want 1 as emp reports it", m.Structure.GPUCount)
	}
	for i, s := range p.Slots {
		if w := m.Structure.Workers[s.ID]; w.GPUID != i || w.PM2Name != fmt.Sprintf("redis-worker-mock-%d", i) {
			t.Errorf("worker %s: gpu_id %d pm2_name %s, want %d and redis-worker-mock-%d", s.ID, w.GPUID, w.PM2Name, i, i)
		}
	}
}

type sender struct{ msgs []status.Message }

func (s *sender) PublishMachineStatus(_ context.Context, _ string, raw []byte) error {
	var m status.Message
	if err := json.Unmarshal(raw, &m); err != nil {
		return err
	}
	s.msgs = append(s.msgs, m)
	return nil
}

// The publisher remembers each slot's last activity, so the shutdown message, built after the
// slots are gone, still carries it; after the shutdown message it sends nothing.
func TestPublisherShutdown(t *testing.T) {
	p := testPlan(t)
	var slots []state.Slot
	for _, s := range p.Slots {
		slots = append(slots, state.Slot{ID: s.ID, Connector: s.Connector, GPU: s.GPU})
	}
	st := state.New("box", "", slots)
	st.SetPhase(state.Ready)
	st.JobClaimed("box-worker-simulation-0", "job-1", "simulation")
	st.JobEnded("box-worker-simulation-0", "completed", "")
	var s sender
	pub := status.NewPublisher(func() *plan.Plan { return p }, st, &s, time.Minute, "", "v1", slog.New(slog.DiscardHandler))
	ctx := context.Background()
	if err := pub.Publish(ctx, status.EventDriven); err != nil {
		t.Fatal(err)
	}
	last := s.msgs[0].Status.Workers["box-worker-simulation-0"].LastActivity
	var ids []string
	for _, sl := range p.Slots {
		ids = append(ids, sl.ID)
	}
	st.SetPhase(state.Draining)
	st.RemoveSlots(ids)
	st.SetPhase(state.Shutdown)
	if err := pub.Publish(ctx, status.Shutdown); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, status.Periodic); err != nil || len(s.msgs) != 2 {
		t.Fatalf("after the shutdown message: %v, %d messages; want nothing more sent", err, len(s.msgs))
	}
	down := s.msgs[1]
	if w := down.Status.Workers["box-worker-simulation-0"]; w.Status != "offline" || w.LastActivity != last || last <= 0 {
		t.Errorf("shutdown status = %+v, want offline at the last activity %d", w, last)
	}
	if len(down.Structure.Workers) != 0 || down.UpdateType != status.Shutdown || down.Status.Machine.Phase != "shutdown" {
		t.Errorf("shutdown message = %+v", down)
	}
}

// MACHINE_POOL reaches machine:status as status.machine.pool (additive), and a machine without
// a pool sends no pool field.
func TestMessageCarriesPool(t *testing.T) {
	p := testPlan(t)
	for _, pool := range []string{"fast", ""} {
		st := state.New("box", pool, nil)
		st.SetPhase(state.Ready)
		raw, err := json.Marshal(status.Build(p, st.Snapshot(), status.Periodic, "", "v1", time.Now(), nil))
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Status struct {
				Machine map[string]any `json:"machine"`
			} `json:"status"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		got, has := m.Status.Machine["pool"]
		if pool == "" && has {
			t.Errorf("a machine without a pool sent status.machine.pool = %v", got)
		}
		if pool != "" && got != pool {
			t.Errorf("status.machine.pool = %v, want %q", got, pool)
		}
		if m.Status.Machine["phase"] != "ready" {
			t.Errorf("status.machine lost its phase: %v", m.Status.Machine)
		}
	}
}
