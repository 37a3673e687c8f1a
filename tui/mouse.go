package tui

import (
	tea "charm.land/bubbletea/v2"
)

// zone is a body line that shows a pane's row (row -1: the pane's title).
type zone struct {
	line int
	pane pane
	row  int
}

// zones map the body's lines to pane rows as the last frame drew them.
type zones struct{ byLine map[int]zone }

func (z *zones) reset() { clear(z.byLine) }

func (z *zones) add(line int, p pane, row int) {
	if z.byLine == nil {
		z.byLine = map[int]zone{}
	}
	z.byLine[line] = zone{line: line, pane: p, row: row}
}

func (z *zones) at(line int) (zone, bool) {
	zn, ok := z.byLine[line]
	return zn, ok
}

// click selects the pane and row under the pointer; a click on the selected row describes it,
// as enter does. In the logs and describe views a click does nothing.
func (m *Model) click(ms tea.Mouse) (tea.Model, tea.Cmd) {
	if ms.Button != tea.MouseLeft || m.mode != modeMain || m.filtering {
		return m, nil
	}
	zn, ok := m.ext.zones.at(ms.Y - m.ext.bodyTop)
	if !ok {
		return m, nil
	}
	again := m.focus == zn.pane && m.sel[zn.pane] == zn.row
	m.focus = zn.pane
	if zn.row >= 0 {
		m.sel[zn.pane] = zn.row
		m.clampSelection()
		if again {
			m.openDescribe()
		}
	}
	return m, nil
}

// wheel scrolls the logs and describe views, and moves the selection of the focused pane
// (the pane under the pointer, when there is one) on the main screen.
func (m *Model) wheel(ms tea.Mouse) (tea.Model, tea.Cmd) {
	up := ms.Button == tea.MouseWheelUp
	if ms.Button != tea.MouseWheelUp && ms.Button != tea.MouseWheelDown {
		return m, nil
	}
	const step = 3
	switch m.mode {
	case modeLogs:
		if up {
			m.follow = false
			m.logScroll += step
		} else {
			m.logScroll = max(0, m.logScroll-step)
		}
	case modeDescribe:
		if up {
			m.ext.descScroll = max(0, m.ext.descScroll-step)
		} else {
			m.ext.descScroll += step
		}
	case modeMain:
		if zn, ok := m.ext.zones.at(ms.Y - m.ext.bodyTop); ok {
			m.focus = zn.pane
		}
		if up {
			m.sel[m.focus] = max(0, m.sel[m.focus]-1)
		} else {
			m.sel[m.focus]++
			m.clampSelection()
		}
	}
	return m, nil
}
