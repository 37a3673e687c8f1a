package tui

import (
	"context"
	"strings"
	"testing"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/emp-job-queue/machine/core/control"
)

type quietClient struct{}

func (quietClient) Updates() <-chan control.Snapshot { return nil }
func (quietClient) Do(context.Context, control.Command) (control.Result, error) {
	return control.Result{OK: true}, nil
}
func (quietClient) Close() error { return nil }

func mouseModel(w, h int) *Model {
	m := New(quietClient{}, Options{})
	m.width, m.height, m.have = w, h, true
	m.snap = control.Snapshot{
		Machine:    control.Machine{ID: "box", Phase: "ready"},
		Services:   []control.Service{{Name: "svc-a", State: "ready"}, {Name: "svc-b", State: "ready"}},
		Connectors: []control.Connector{{Name: "alpha", State: "enabled"}, {Name: "beta", State: "enabled"}},
	}
	return m
}

// rowOf is the screen row whose text contains s, in the frame the model draws now.
func rowOf(t *testing.T, m *Model, s string) int {
	t.Helper()
	for y, l := range strings.Split(ansi.Strip(m.view()), "\n") {
		if strings.Contains(l, s) {
			return y
		}
	}
	t.Fatalf("no row shows %q", s)
	return -1
}

// A click selects the row under it and focuses its pane; a second click describes it.
func TestClickSelectsThenDescribes(t *testing.T) {
	for _, size := range [][2]int{{80, 24}, {160, 48}} {
		m := mouseModel(size[0], size[1])
		y := rowOf(t, m, "beta")
		m.Update(tea.MouseClickMsg{X: 5, Y: y, Button: tea.MouseLeft})
		if m.focus != paneConnectors || m.sel[paneConnectors] != 1 {
			t.Fatalf("%v: after a click on beta: focus %d, selection %d", size, m.focus, m.sel[paneConnectors])
		}
		m.Update(tea.MouseClickMsg{X: 5, Y: rowOf(t, m, "beta"), Button: tea.MouseLeft})
		if m.mode != modeDescribe || m.ext.desc.key != "beta" {
			t.Fatalf("%v: a second click did not describe beta: mode %d, target %+v", size, m.mode, m.ext.desc)
		}
		m.Update(tea.KeyPressMsg{Code: tea.KeyEscape})
		if m.mode != modeMain {
			t.Fatalf("%v: esc did not return to the main screen", size)
		}
	}
}

// The wheel moves the selection on the main screen and scrolls the logs.
func TestWheelScrolls(t *testing.T) {
	m := mouseModel(80, 24)
	m.view()
	m.Update(tea.MouseWheelMsg{X: 5, Y: rowOf(t, m, "svc-a"), Button: tea.MouseWheelDown})
	if m.focus != paneServices || m.sel[paneServices] != 1 {
		t.Fatalf("wheel down over services: focus %d, selection %d", m.focus, m.sel[paneServices])
	}
	m.mode, m.follow = modeLogs, true
	m.Update(tea.MouseWheelMsg{Button: tea.MouseWheelUp})
	if m.logScroll == 0 || m.follow {
		t.Fatalf("wheel up in the logs: scroll %d, follow %v", m.logScroll, m.follow)
	}
}

// Nothing an idle console receives draws the screen again: the frame is reused until a
// message changes something.
func TestFrameDrawnOnlyOnChange(t *testing.T) {
	m := mouseModel(80, 24)
	first := m.view()
	m.Update(tea.MouseMotionMsg{X: 1, Y: 1})
	m.Update(tailTickMsg{gen: -1})
	if m.ext.dirty {
		t.Fatal("motion and a stale tick marked the frame for drawing")
	}
	if again := m.view(); again != first {
		t.Fatal("the frame changed without a change")
	}
	m.Update(tea.KeyPressMsg{Code: tea.KeyTab})
	if !m.ext.dirty {
		t.Fatal("a key did not mark the frame for drawing")
	}
}

// cellWidth agrees with ansi.StringWidth on what the console draws, and falls back to it for
// anything else.
func TestCellWidth(t *testing.T) {
	for _, s := range []string{"", "plain", "\x1b[1;38;5;86m▸ GPUs\x1b[m (nvml)", "⣿⣷ ┤│┄ █░ ▁▂ ✓✗ ↻ °C ‹cut› …", "wide 日本", "emoji 🚀 ok", "\x1b]0;title\x07x"} {
		if got, want := cellWidth(s), ansi.StringWidth(s); got != want {
			t.Errorf("cellWidth(%q) = %d, want %d", s, got, want)
		}
	}
}
