package tui

import (
	"context"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/emp-job-queue/machine/core/control"
)

// ext is the console's state for the large layout, describe views, the mouse and drawing on
// change only.
type ext struct {
	paints *paints

	// frame is the last drawn screen; dirty says it must be drawn again. Only messages that
	// change something mark it, so an idle console draws nothing.
	frame string
	dirty bool

	zones      zones  // screen rows → pane rows, for clicks
	tableZones []zone // rows of the large layout's tables, before placing
	bodyTop    int    // screen row of the body's first line

	tail        []string // last lines of tailService's log, for the large layout
	tailService string
	tailGen     int
	tailPolling bool

	desc       target // what the describe view shows
	descScroll int    // lines scrolled down
	descLines  int    // lines of the last describe view, for scrolling
}

type (
	tailTickMsg struct{ gen int }
	tailMsg     struct {
		service string
		lines   []string
	}
)

// tailEvery is how often the large layout polls its log tail: at the console's interval.
func (m *Model) tailEvery() time.Duration {
	if m.opts.Interval > 0 {
		return m.opts.Interval
	}
	return control.DefaultInterval
}

// Update implements tea.Model: the console's own messages first, then the rest.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tailTickMsg:
		if msg.gen != m.ext.tailGen {
			return m, nil
		}
		return m, m.pollTail(false)
	case tailMsg:
		if msg.service != m.ext.tailService || !equalLines(msg.lines, m.ext.tail) {
			m.ext.tail, m.ext.tailService, m.ext.dirty = msg.lines, msg.service, true
		}
		return m, nil
	case tea.MouseClickMsg:
		m.ext.dirty = true
		return m.click(msg.Mouse())
	case tea.MouseWheelMsg:
		m.ext.dirty = true
		return m.wheel(msg.Mouse())
	case tea.MouseMsg:
		return m, nil // motion and release change nothing
	case tea.KeyPressMsg:
		m.ext.dirty = true
		if model, cmd, ok := m.extKey(msg.String()); ok {
			return model, cmd
		}
	default:
		m.ext.dirty = true
	}
	model, cmd := m.update(msg)
	return model, tea.Batch(cmd, m.pollTail(true))
}

// pollTail asks for the selected service's last lines while the large layout shows them,
// and schedules the next poll; start only starts a chain when none runs.
func (m *Model) pollTail(start bool) tea.Cmd {
	if start && m.ext.tailPolling {
		return nil
	}
	svc, ok := m.selectedService()
	if m.client == nil || !m.have || m.mode != modeMain || !m.large() || !ok {
		m.ext.tailPolling = false
		return nil
	}
	if start {
		m.ext.tailGen++
	}
	m.ext.tailPolling = true
	gen, client, rows := m.ext.tailGen, m.client, m.height
	fetch := func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := client.Do(ctx, control.Command{Op: control.Logs, Service: svc.Name, Lines: rows})
		if err != nil || !res.OK {
			return nil
		}
		return tailMsg{service: svc.Name, lines: res.Lines}
	}
	return tea.Batch(fetch, tea.Tick(m.tailEvery(), func(time.Time) tea.Msg { return tailTickMsg{gen: gen} }))
}

func equalLines(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// view returns the screen, drawing it again only when something changed since the last time.
func (m *Model) view() string {
	if m.ext.dirty || m.ext.frame == "" {
		m.ext.frame, m.ext.dirty = m.render(), false
	}
	return m.ext.frame
}
