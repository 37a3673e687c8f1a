package tui_test

import (
	"testing"

	"github.com/charmbracelet/x/exp/golden"

	"github.com/emp-job-queue/machine/tui"
)

// The main screen of a busy machine (60 s of history on two GPUs), and enter on a row of
// every pane opens its describe view; esc returns to the main screen.
func TestBusyMainScreen(t *testing.T) {
	eachSize(t, func(t *testing.T, w, h int) {
		core := newFake()
		snap, logs := busy()
		core.logs = logs
		core.updates <- snap
		s := start(t, w, h, core, tui.Options{})
		want := "openai"
		if w >= 120 {
			want = "got prompt 40"
		}
		golden.RequireEqual(t, s.waitFor(want))
	})
}

func TestDescribeViews(t *testing.T) {
	views := []struct {
		name string
		keys []string
		want string
	}{
		{"gpu", []string{"enter"}, "Health events"},
		{"service", []string{"tab", "enter"}, "Restarts"},
		{"connector", []string{"tab", "tab", "enter"}, "Last errors"},
		{"api-connector", []string{"tab", "tab", "j", "enter"}, "rate_limit_exceeded"},
		{"job", []string{"tab", "tab", "tab", "enter"}, "Job 7f3a9c21"},
		{"failed-job", []string{"tab", "tab", "tab", "j", "j", "enter"}, "Job deadbeef-bbbb"},
	}
	for _, v := range views {
		t.Run(v.name, func(t *testing.T) {
			eachSize(t, func(t *testing.T, w, h int) {
				core := newFake()
				snap, logs := busy()
				core.logs = logs
				core.updates <- snap
				s := start(t, w, h, core, tui.Options{})
				s.waitFor("openai")
				s.press(v.keys...)
				golden.RequireEqual(t, s.waitFor(v.want))
				s.press("esc")
				s.waitFor("Connectors")
			})
		})
	}
}
