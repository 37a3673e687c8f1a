package machine_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/control"
)

// With a model cache and the autoscaler on, the console's snapshot carries what its Decisions
// view shows: the autoscaler's recent decisions, the demand tracker's pending jobs and arrival
// rates by service, and the models on disk with their sizes.
func TestConsoleSnapshotCarriesDecisionsDemandAndCache(t *testing.T) {
	f := newModelFiles(t)
	env := f.env("0")
	for k, v := range map[string]string{"WORKER_CONNECTORS": "simulation:1", "MACHINE_AUTOSCALE": "on",
		"MACHINE_ALLOWED_CONNECTORS": "mock", "MACHINE_SERVICE_IDLE_TTL": "1h", "MACHINE_AUTOSCALE_COOLDOWN": "100ms",
		"MACHINE_GPU_SAMPLE_INTERVAL_MS": "100"} {
		env[k] = v
	}
	h := start(t, env)
	cached := h.submit("simulation", workflow("good.safetensors"))
	h.waitFor("the job that downloads its model to complete", func() bool { return h.status(cached) == "completed" })
	mock := h.submit("mock", `{}`)
	h.waitFor("the mock job to complete", func() bool { return h.status(mock) == "completed" })
	// Nothing on this machine serves "elsewhere": its jobs stay pending, counted as demand.
	h.submit("elsewhere", `{}`)
	h.submit("elsewhere", `{}`)

	var snap control.Snapshot
	h.waitFor("the demand tracker to count the 2 pending elsewhere jobs", func() bool {
		snap = h.m.Control().Snapshot()
		for _, s := range snap.Demand.Services {
			if s.Service == "elsewhere" && s.Pending == 2 && s.PerMin > 0 {
				return true
			}
		}
		return false
	})
	if d := snap.Demand; !d.Tracked || d.AgeMS < 0 || d.Note != "" {
		t.Errorf("the demand = %+v", d)
	}
	a := snap.Autoscaler
	if !a.On || len(a.Recent) == 0 || a.Recent[0].What != "enable mock to 1 slot(s)" || !strings.Contains(a.Recent[0].Reason, "pre-warm") ||
		!strings.Contains(a.Recent[0].Outcome, "change") || a.Count != len(a.Recent) || *a.Last != a.Recent[len(a.Recent)-1] {
		t.Errorf("the autoscaler's recent decisions = %+v (last %+v)", a.Recent, a.Last)
	}
	mc := snap.ModelCache
	if !mc.On || !slices.Equal(mc.Models, []control.CachedModel{{Name: "good.safetensors", Bytes: 64 << 10}}) || mc.OnDisk != 1 {
		t.Errorf("the model cache's models = %+v", mc)
	}
}

// With neither the autoscaler nor a model cache no demand tracker runs, and the snapshot says
// so rather than showing an empty queue.
func TestConsoleSnapshotSaysDemandIsNotTracked(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation", "MACHINE_AUTOSCALE": "off"})
	d := h.m.Control().Snapshot().Demand
	if d.Tracked || !strings.Contains(d.Note, "MACHINE_AUTOSCALE") || !strings.Contains(d.Note, "MACHINE_MODEL_CACHE_GB=0") || len(d.Services) != 0 {
		t.Errorf("the demand with no tracker = %+v", d)
	}
}
