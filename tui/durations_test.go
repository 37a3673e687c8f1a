package tui_test

import (
	"strings"
	"testing"

	"github.com/charmbracelet/x/ansi"

	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/tui"
)

// The Decisions line shows the expected job durations the pool fit uses, most counted first, and
// how many more kinds there are; with none known it says nothing of them.
func TestDecisionsLineShowsExpectedDurations(t *testing.T) {
	snap, logs := busy()
	if frame := ansi.Strip(tui.Frame(snap, tui.MainScreen, "comfyui-gpu0", logs, 240, 48)); strings.Contains(frame, "expected:") {
		t.Errorf("the frame shows expected durations although none is known:\n%s", frame)
	}
	snap.Durations = []control.ExpectedDuration{
		{Service: "comfyui", Model: "sdxl", EWMAMS: 42_000, Count: 120},
		{Service: "simulation", EWMAMS: 1_240, Count: 40},
		{Service: "comfyui", Model: "wan", EWMAMS: 390_000, Count: 7},
		{Service: "comfyui", Model: "flux", EWMAMS: 100_000, Count: 3},
		{Service: "openai", EWMAMS: 850, Count: 2},
	}
	frame := ansi.Strip(tui.Frame(snap, tui.MainScreen, "comfyui-gpu0", logs, 240, 48))
	want := "expected: comfyui/sdxl 42s ×120, simulation 1.2s ×40, comfyui/wan 6m30s ×7, comfyui/flux 1m40s ×3 (+1)"
	if !strings.Contains(frame, want) {
		t.Errorf("the frame lacks %q:\n%s", want, frame)
	}
}
