package tui_test

import (
	"strings"
	"testing"

	"github.com/charmbracelet/x/ansi"
	"github.com/charmbracelet/x/exp/golden"

	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/tui"
)

// demanding is busy() with the demand-aware work on: decisions, demand, a model cache and
// expected durations.
func demanding() control.Snapshot {
	snap, _ := busy()
	recent := []control.Decision{
		{What: "enable comfyui to 1 slot(s)", Reason: "pre-warm: 4 job(s) wait for comfyui", Outcome: "queued as change 3", AgeMS: 600_000},
		{What: "resize comfyui to 2 slot(s)", Reason: "12 pending, 3.5 arrivals/min: 2 slots clear them in 4m", Outcome: "queued as change 5", AgeMS: 240_000},
		{What: "disable mock", Reason: "idle for 5m (MACHINE_SERVICE_IDLE_TTL)", Outcome: "refused: connector mock has a job in flight; the next round tries again", AgeMS: 12_000},
	}
	snap.Autoscaler = control.Autoscaler{On: true, Pending: 14, Queue: 42, Count: len(recent), Recent: recent, Last: &recent[2]}
	snap.Demand = control.Demand{Tracked: true, AgeMS: 1500, QueueLength: 42, Unattributed: 28,
		Services: []control.ServiceDemand{{Service: "comfyui", Pending: 12, PerMin: 3.5}, {Service: "openai_text", Pending: 2, PerMin: 0.75},
			{Service: "simulation", Pending: 0, PerMin: 0.1}},
		Models: []control.ModelDemand{{Name: "sdxl_base_1.0.safetensors", Pending: 9, Score: 10.4}, {Name: "flux1-dev-fp8.safetensors", Pending: 3, Score: 3.2}}}
	snap.ModelCache = control.ModelCache{On: true, UsedBytes: 18 << 30, BudgetBytes: 200 << 30, Hits: 31, Misses: 4, Downloads: 5, Evictions: 1,
		OnDisk: 2, Downloading: []string{"flux1-dev-fp8.safetensors"},
		Models: []control.CachedModel{{Name: "sdxl_base_1.0.safetensors", Bytes: 6_938_078_334}, {Name: "sdxl_vae.safetensors", Bytes: 334_641_164}},
		InVRAM: map[int][]string{0: {"sdxl_base_1.0.safetensors", "sdxl_vae.safetensors"}, 1: {"sdxl_base_1.0.safetensors"}}}
	snap.Durations = []control.ExpectedDuration{{Service: "comfyui", Model: "sdxl_base_1.0.safetensors", EWMAMS: 42_000, Count: 118},
		{Service: "openai_text", EWMAMS: 1_200, Count: 40}}
	return snap
}

// `a` opens the Decisions view: the autoscaler and its recent decisions, the demand, the model
// cache with its models on disk and the inferred VRAM contents, and the expected durations.
func TestDecisionsView(t *testing.T) {
	eachSize(t, func(t *testing.T, w, h int) {
		core := newFake()
		core.updates <- demanding()
		s := start(t, w, h, core, tui.Options{})
		s.waitFor("openai")
		s.press("a")
		golden.RequireEqual(t, s.waitFor("Recent decisions"))
		s.press("esc")
		s.waitFor("Connectors")
	})
}

// With the autoscaler, the demand tracker and the model cache off, the view says "off" and why
// for each, and shows no figure.
func TestDecisionsViewOff(t *testing.T) {
	eachSize(t, func(t *testing.T, w, h int) {
		core := newFake()
		snap := fixture()
		snap.Autoscaler = control.Autoscaler{Note: "MACHINE_AUTOSCALE=off: the connectors stay as configured"}
		snap.Demand = control.Demand{Note: "not tracked: the autoscaler is off (MACHINE_AUTOSCALE) and there is no model cache (MACHINE_MODEL_CACHE_GB=0)"}
		core.updates <- snap
		s := start(t, w, h, core, tui.Options{})
		s.waitFor("openai")
		s.press("a")
		golden.RequireEqual(t, s.waitFor("Expected durations"))
	})
}

// Every part of the Decisions view shows in a tall frame, with the VRAM labelled an inference.
func TestDecisionsViewContents(t *testing.T) {
	frame := ansi.Strip(tui.DescribeFrame(demanding(), tui.DescribeDecisions, "", 160, 80))
	for _, want := range []string{"Autoscaler  on", "disable mock", "why: idle for 5m", "→ refused: connector mock has a job in flight",
		"comfyui                        12         3.50", "sdxl_base_1.0.safetensors", "6.46 GB", "18.0 GB of 200.0 GB",
		"31 hit(s), 4 miss(es): 89%", "5, evictions 1", "downloading   flux1-dev-fp8.safetensors", "inferred", "GPU 0", "sdxl_vae.safetensors",
		"comfyui/sdxl_base_1.0.safetensors", "42s", "28 unattributed"} {
		if !strings.Contains(frame, want) {
			t.Errorf("the Decisions view lacks %q:\n%s", want, frame)
		}
	}
	// Newest first.
	if strings.Index(frame, "disable mock") > strings.Index(frame, "enable comfyui") {
		t.Errorf("the decisions are not newest first:\n%s", frame)
	}
}
