package machine_test

import (
	"strings"
	"testing"

	"github.com/charmbracelet/x/ansi"

	"github.com/emp-job-queue/machine/tui"
)

// The large layout with a real machine's snapshot: jobs running on two simulated GPUs fill at
// least 44 of the 48 rows at 160×48 (tui's layout tests check the same with 5 minutes of
// history drawn from a fixture).
func TestLargeLayoutOfARunningMachine(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation:2", "MACHINE_GPU_COUNT": "2", "WORKER_SIMULATION_PROCESSING_TIME": "30"})
	for range 4 {
		h.submit("simulation", `{}`)
	}
	h.waitFor("both slots to run a job and a few telemetry samples", func() bool {
		snap := h.m.Control().Snapshot()
		running := 0
		for _, s := range snap.Slots {
			if s.JobID != "" {
				running++
			}
		}
		return running == 2 && len(snap.GPUs) == 2 && len(snap.GPUs[0].History) >= 3
	})
	frame := tui.Frame(h.m.Control().Snapshot(), tui.MainScreen, "", nil, 160, 48)
	lines := strings.Split(ansi.Strip(frame), "\n")
	filled := 0
	for _, l := range lines {
		if strings.TrimSpace(l) != "" {
			filled++
		}
	}
	if len(lines) != 48 || filled < 44 {
		t.Errorf("%d of %d rows carry content, want ≥ 44 of 48:\n%s", filled, len(lines), strings.Join(lines, "\n"))
	}
	t.Logf("%d of 48 rows carry content", filled)
	text := strings.Join(lines, "\n")
	for _, want := range []string{"GPU 0 utilization", "GPU 1", "queue depth", "jobs/min"} {
		if !strings.Contains(text, want) {
			t.Errorf("the frame lacks %q:\n%s", want, text)
		}
	}
}
