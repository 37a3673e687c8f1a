package tui

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/control"
)

type nopClient struct{}

func (nopClient) Updates() <-chan control.Snapshot { return nil }
func (nopClient) Do(context.Context, control.Command) (control.Result, error) {
	return control.Result{OK: true}, nil
}
func (nopClient) Close() error { return nil }

// Each f or l starts a new chain of log polls; the older chain ends at its next tick instead of
// polling on alongside.
func TestOnlyTheNewestLogTickChainPolls(t *testing.T) {
	m := New(nopClient{}, Options{})
	m.mode, m.follow, m.logService = modeLogs, true, "comfyui-gpu0"
	m.newLogTicks()
	m.newLogTicks() // e.g. f pressed twice
	if _, cmd := m.Update(logTickMsg{gen: m.tickGen - 1}); cmd != nil {
		t.Error("a tick of the older chain polled again")
	}
	if _, cmd := m.Update(logTickMsg{gen: m.tickGen}); cmd == nil {
		t.Error("the newest chain stopped")
	}
}

func TestBackspaceCutsARune(t *testing.T) {
	m := New(nopClient{}, Options{})
	m.filtering, m.filter = true, "gpü"
	m.key("backspace")
	if m.filter != "gp" {
		t.Errorf("filter after backspace = %q, want %q", m.filter, "gp")
	}
}

// The large layout reads its log tail again at the console's interval, the default unless set.
func TestTailFollowsTheInterval(t *testing.T) {
	if got := New(nil, Options{}).tailEvery(); got != control.DefaultInterval {
		t.Errorf("tail every %s by default, want %s", got, control.DefaultInterval)
	}
	if got := New(nil, Options{Interval: 5 * time.Second}).tailEvery(); got != 5*time.Second {
		t.Errorf("tail every %s at --interval 5s", got)
	}
}

// The time axis names the same span whatever the step's jitter.
func TestTimeAxisIgnoresStepJitter(t *testing.T) {
	for _, step := range []int64{999, 1000, 1001} {
		axis := timeAxis(4, 60, step)
		if !strings.Contains(axis, "-5m00s") || !strings.Contains(axis, "-2m30s") || !strings.HasSuffix(strings.TrimSpace(axis), "now") {
			t.Errorf("a %d ms step labels the axis %q", step, axis)
		}
	}
	if axis := timeAxis(4, 60, 2000); !strings.Contains(axis, "-10m00s") {
		t.Errorf("a 2 s step labels the axis %q", axis)
	}
}
