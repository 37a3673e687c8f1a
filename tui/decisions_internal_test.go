package tui

import (
	"strings"
	"testing"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"
)

// The Decisions pane is reachable every way the others are, in both layouts: tab focuses it
// and enter describes it, `a` describes it from any pane, a click on its line focuses it and a
// second click describes it; esc returns.
func TestDecisionsPaneReachable(t *testing.T) {
	isDecisions := func(m *Model) bool {
		return m.mode == modeDescribe && m.ext.desc.pane == paneDecisions &&
			strings.Contains(ansi.Strip(m.view()), "Expected durations")
	}
	for _, size := range [][2]int{{80, 24}, {160, 48}} {
		m := mouseModel(size[0], size[1])
		for range paneDecisions {
			m.Update(tea.KeyPressMsg{Code: tea.KeyTab})
		}
		if m.focus != paneDecisions || !strings.Contains(ansi.Strip(m.view()), "▸ Decisions") {
			t.Fatalf("%v: tab did not reach the Decisions pane (focus %d)", size, m.focus)
		}
		m.Update(tea.KeyPressMsg{Code: tea.KeyEnter})
		if !isDecisions(m) {
			t.Fatalf("%v: enter on the Decisions pane: mode %d, target %+v", size, m.mode, m.ext.desc)
		}
		m.Update(tea.KeyPressMsg{Code: tea.KeyEscape})
		m.Update(tea.KeyPressMsg{Code: tea.KeyTab}) // back to GPUs
		if m.mode != modeMain || m.focus != paneGPUs {
			t.Fatalf("%v: esc and tab: mode %d, focus %d", size, m.mode, m.focus)
		}
		m.Update(tea.KeyPressMsg{Code: 'a', Text: "a"})
		if !isDecisions(m) {
			t.Fatalf("%v: a did not open the Decisions view", size)
		}
		m.Update(tea.KeyPressMsg{Code: tea.KeyEscape})
		m.focus = paneServices
		m.Update(tea.MouseClickMsg{X: 5, Y: rowOf(t, m, "Decisions"), Button: tea.MouseLeft})
		if m.focus != paneDecisions || m.mode != modeMain {
			t.Fatalf("%v: a click on the Decisions line: focus %d, mode %d", size, m.focus, m.mode)
		}
		m.Update(tea.MouseClickMsg{X: 5, Y: rowOf(t, m, "Decisions"), Button: tea.MouseLeft})
		if !isDecisions(m) {
			t.Fatalf("%v: a second click did not open the Decisions view", size)
		}
	}
}

// wordWrap breaks between words, cuts only a word longer than a line, and keeps every word.
func TestWordWrap(t *testing.T) {
	got := wordWrap("refused: connector mock has a job in flight; the next round tries again", 30, "  ")
	want := []string{"  refused: connector mock has", "  a job in flight; the next", "  round tries again"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("wordWrap = %q, want %q", got, want)
	}
	if got := wordWrap("abcdefghijklmnop", 12, "  "); strings.Join(got, "|") != "  abcdefghij|  klmnop" {
		t.Errorf("a long word = %q", got)
	}
}
