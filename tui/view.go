package tui

import (
	"fmt"
	neturl "net/url"
	"strconv"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/state"
)

// styles is every style of the console, in one place.
type styles struct {
	title, focused, dim, ok, warn, bad, key, header, bar, barEmpty lipgloss.Style
}

func defaultStyles() styles {
	return styles{
		title:    lipgloss.NewStyle().Bold(true),
		focused:  lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("86")),
		dim:      lipgloss.NewStyle().Foreground(lipgloss.Color("244")),
		ok:       lipgloss.NewStyle().Foreground(lipgloss.Color("42")),
		warn:     lipgloss.NewStyle().Foreground(lipgloss.Color("214")),
		bad:      lipgloss.NewStyle().Foreground(lipgloss.Color("196")).Bold(true),
		key:      lipgloss.NewStyle().Foreground(lipgloss.Color("86")).Bold(true),
		header:   lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("231")).Background(lipgloss.Color("24")),
		bar:      lipgloss.NewStyle().Foreground(lipgloss.Color("42")),
		barEmpty: lipgloss.NewStyle().Foreground(lipgloss.Color("238")),
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// View implements tea.Model.
func (m *Model) View() tea.View {
	v := tea.NewView(m.view())
	v.AltScreen = true
	v.MouseMode = tea.MouseModeCellMotion
	v.WindowTitle = "machine " + m.snap.Machine.ID
	return v
}

// render draws the screen as text; View wraps it. It never calls the core: everything comes
// from the last snapshot.
func (m *Model) render() string {
	if !m.have {
		return "connecting to the machine…"
	}
	var body []string
	status := m.statusLines()
	switch m.mode {
	case modeHelp:
		body = m.helpView()
	case modeLogs:
		body = m.logsView(m.height - 2 - len(status))
	case modeDescribe:
		body = m.describeView(m.height - 2 - len(status))
	default:
		body = m.mainView(m.height - 2 - len(status))
	}
	m.ext.bodyTop = 1 + len(status)
	lines := append(append([]string{m.headerLine()}, status...), body...)
	for len(lines) < m.height-1 {
		lines = append(lines, "")
	}
	lines = lines[:max(m.height-1, 0)]
	lines = append(lines, m.footer())
	for i, l := range lines {
		lines[i] = cut(l, m.width)
	}
	return strings.Join(lines, "\n")
}

// cut shortens a styled line to width cells.
func cut(s string, width int) string {
	if cellWidth(s) <= width {
		return s
	}
	return lipgloss.NewStyle().MaxWidth(width).Render(s)
}

func dur(ms int64) string {
	d := time.Duration(ms) * time.Millisecond
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

func (m *Model) headerLine() string {
	mc := m.snap.Machine
	phase := mc.Phase
	if mc.Paused {
		phase = "drained"
	}
	url := mc.BrokerURL
	if m.width < 120 { // compact: the host is enough
		if u, err := neturl.Parse(url); err == nil && u.Host != "" {
			url = u.Host
		}
	}
	broker := "● " + url
	if mc.BrokerEmbedded {
		broker += " (embedded)"
	}
	brokerStyle := m.styles.ok
	if !mc.BrokerConnected {
		broker = "○ " + url + " unreachable"
		brokerStyle = m.styles.bad
	}
	if m.width < 120 { // compact: no labels
		pool := ""
		if mc.Pool != "" {
			pool = "  " + mc.Pool
		}
		return fmt.Sprintf("%s%s  %s  up %s  queue %d  %s", m.styles.header.Render(" "+mc.ID+" "), pool,
			m.phaseStyle(phase), dur(mc.UptimeMS), mc.QueueDepth, brokerStyle.Render(broker))
	}
	pool := ""
	if mc.Pool != "" {
		pool = "  pool " + mc.Pool
	}
	left := m.styles.header.Render(" machine " + mc.ID + " ")
	return fmt.Sprintf("%s%s  %s  up %s  queue %d  broker %s", left, pool, m.phaseStyle(phase), dur(mc.UptimeMS),
		mc.QueueDepth, brokerStyle.Render(broker))
}

func (m *Model) phaseStyle(phase string) string {
	switch phase {
	case "ready":
		return m.styles.ok.Render(phase)
	case "starting":
		return m.styles.warn.Render(phase)
	default:
		return m.styles.bad.Render(phase)
	}
}

// statusLines is the line under the header: a question, the filter, or the last answer of the
// core, wrapped onto a second line when it is long.
func (m *Model) statusLines() []string {
	s := m.statusLine()
	if w := lipgloss.Width(s); w <= m.width || m.width < 20 {
		return []string{s}
	}
	plain := []rune(ansiStrip(s))
	first, rest := string(plain[:m.width]), string(plain[m.width:])
	return []string{m.styles.warn.Render(first), m.styles.warn.Render(rest)}
}

func (m *Model) statusLine() string {
	switch {
	case m.filtering:
		return m.styles.key.Render("/") + m.filter + "▏"
	case m.mode == modeConfirm:
		return m.styles.warn.Render(m.question)
	case m.mode == modeQuit:
		return m.styles.warn.Render("quit: s stops the machine, D detaches and leaves it running headless, esc stays")
	case m.status != "":
		return m.styles.dim.Render(m.status)
	case m.filter != "":
		return m.styles.dim.Render("filter: " + m.filter + "  (esc clears)")
	}
	return ""
}

func (m *Model) footer() string {
	hints := []string{"? help", "tab pane", "t toggle", "r restart", "d drain", "l logs", "/ filter", "q quit"}
	if m.mode == modeLogs {
		follow := "f pause"
		if !m.follow {
			follow = "f follow"
		}
		hints = []string{"esc back", follow, "w wrap", "/ filter", "↑↓ scroll", "q quit"}
	}
	if m.mode == modeDescribe {
		hints = []string{"esc back", "↑↓ scroll", "? help", "q quit"}
	} else if m.mode == modeMain && m.width >= 100 {
		hints = append(hints[:len(hints)-1:len(hints)-1], "enter describe", "q quit")
	}
	var b strings.Builder
	for i, h := range hints {
		if i > 0 {
			b.WriteString("  ")
		}
		k, rest, _ := strings.Cut(h, " ")
		b.WriteString(m.styles.key.Render(k) + " " + m.styles.dim.Render(rest))
	}
	return b.String()
}

func (m *Model) sectionTitle(p pane, extra string) string {
	st := m.styles.title
	marker := "  "
	if m.focus == p && (m.mode == modeMain || m.mode == modeDescribe) {
		st, marker = m.styles.focused, "▸ "
	}
	return st.Render(marker+paneNames[p]) + m.styles.dim.Render(extra)
}

func (m *Model) rowMarker(p pane, i int) string {
	if m.focus == p && m.sel[p] == i {
		return m.styles.focused.Render("›")
	}
	return " "
}

// bar draws a filled bar of width cells for a percentage.
func (m *Model) bar(pct float64, width int) string {
	if width <= 0 {
		return ""
	}
	n := int(pct/100*float64(width) + 0.5)
	n = max(0, min(width, n))
	return m.styles.bar.Render(strings.Repeat("█", n)) + m.styles.barEmpty.Render(strings.Repeat("░", width-n))
}

var sparks = []rune(" ▁▂▃▄▅▆▇█")

func sparkline(vals []float64, width int) string {
	if len(vals) > width {
		vals = vals[len(vals)-width:]
	}
	var b strings.Builder
	for range width - len(vals) {
		b.WriteRune(' ')
	}
	for _, v := range vals {
		if v < 0 {
			b.WriteRune('·')
			continue
		}
		b.WriteRune(sparks[max(0, min(len(sparks)-1, int(v/100*float64(len(sparks)-1)+0.5)))])
	}
	return b.String()
}

func val(p *float64) (float64, bool) {
	if p == nil {
		return 0, false
	}
	return *p, true
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func (m *Model) gpuLines() []string {
	wide := m.width >= 150
	barW, sparkW := 8, 10
	if wide {
		barW, sparkW = 20, 30
	}
	var out []string
	for i, g := range m.snap.GPUs {
		var b strings.Builder
		b.WriteString(m.rowMarker(paneGPUs, i))
		fmt.Fprintf(&b, "%d ", g.Index)
		if wide {
			fmt.Fprintf(&b, "%-22s ", cutPlain(g.Name, 22))
		}
		if !g.Healthy {
			b.WriteString(m.styles.bad.Render("OUT OF SERVICE: " + g.Reason))
			out = append(out, b.String())
			continue
		}
		if u, ok := val(g.Util); ok {
			fmt.Fprintf(&b, "%s %3.0f%% ", m.bar(u, barW), u)
		} else if g.MIG {
			b.WriteString(fmt.Sprintf("%-*s ", barW+5, "n/a under MIG"))
		} else {
			b.WriteString(fmt.Sprintf("%-*s ", barW+5, "util n/a"))
		}
		used, ok1 := val(g.MemUsedMB)
		total, ok2 := val(g.MemTotalMB)
		if ok1 && ok2 && total > 0 {
			fmt.Fprintf(&b, "%s %4.1f/%.0fG ", m.bar(used/total*100, barW/2), used/1024, total/1024)
		}
		if t, ok := val(g.TempC); ok {
			fmt.Fprintf(&b, "%3.0f°C ", t)
		}
		if p, ok := val(g.PowerW); ok {
			if lim, ok := val(g.PowerLimit); ok && wide {
				fmt.Fprintf(&b, "%3.0f/%.0fW ", p, lim)
			} else {
				fmt.Fprintf(&b, "%3.0fW ", p)
			}
		}
		b.WriteString(m.styles.bar.Render(sparkline(g.History, sparkW)) + " ")
		if len(g.Jobs) > 0 {
			b.WriteString("job " + short(g.Jobs[0]))
		} else {
			b.WriteString(m.styles.dim.Render("idle"))
		}
		out = append(out, b.String())
	}
	return out
}

func cutPlain(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func (m *Model) serviceLines() []string {
	svcs := m.services()
	if len(svcs) == 0 {
		return []string{m.styles.dim.Render("   none: this machine runs no internal services")}
	}
	var out []string
	for i, s := range svcs {
		state := s.State
		st := m.styles.warn
		switch s.State {
		case "ready":
			st = m.styles.ok
		case "errored":
			st = m.styles.bad
		}
		health := m.styles.bad.Render("✗ unhealthy")
		if s.Healthy {
			health = m.styles.ok.Render("✓ healthy  ")
		}
		line := fmt.Sprintf("%s %-16s %s %s pid %-7d ↻%-3d :%-5d up %-7s", m.rowMarker(paneServices, i), cutPlain(s.Name, 16),
			st.Render(fmt.Sprintf("%-8s", state)), health, s.PID, s.Restarts, s.Port, dur(s.UptimeMS))
		if s.Error != "" {
			line += " " + m.styles.bad.Render(s.Error)
		}
		out = append(out, line)
	}
	return out
}

func (m *Model) connectorLines() []string {
	var out []string
	for i, c := range m.connectors() {
		st := m.styles.ok
		switch c.State {
		case state.ConnectorDisabled:
			st = m.styles.dim
		case state.ConnectorDraining, state.ConnectorInstalling:
			st = m.styles.warn
		case state.ConnectorFailed:
			st = m.styles.bad
		}
		line := fmt.Sprintf("%s %-14s %s busy %d/%d  done %d  failed %d", m.rowMarker(paneConnectors, i),
			cutPlain(c.Name, 14), st.Render(fmt.Sprintf("%-8s", c.State)), c.Busy, c.Slots, c.Done, c.Failed)
		if c.State == state.ConnectorFailed && c.Error != "" {
			line += "  " + m.styles.bad.Render(cutPlain(c.Error, 60)) // why its last change failed
		}
		out = append(out, line)
	}
	return out
}

func (m *Model) jobLines() []string {
	out := m.costLines()
	barW := 10
	if m.width >= 120 {
		barW = 30
	}
	jobs := m.jobs()
	for i, j := range jobs {
		out = append(out, fmt.Sprintf("%s %-8s %-12s %s %3.0f%% %6s  %s", m.rowMarker(paneJobs, i), short(j.ID),
			cutPlain(j.Service, 12), m.bar(j.Progress, barW), j.Progress, dur(j.ElapsedMS), j.Message))
	}
	if len(m.jobs()) == 0 {
		out = append(out, m.styles.dim.Render("   no job in flight"))
	}
	for k := len(m.snap.Recent) - 1; k >= 0; k-- {
		f := m.snap.Recent[k]
		mark := m.styles.ok.Render("✓")
		if f.Outcome != job.Completed {
			mark = m.styles.bad.Render("✗")
		}
		line := fmt.Sprintf("%s %s %-8s %-12s %-9s %6s", m.rowMarker(paneJobs, len(jobs)+len(m.snap.Recent)-1-k), mark, short(f.ID),
			cutPlain(f.Service, 12), f.Outcome, dur(f.DurationMS))
		if brief := resourceBrief(f.Resources); brief != "" {
			line += " " + m.styles.dim.Render(brief)
		}
		if f.Error != "" {
			line += " " + m.styles.bad.Render(f.Error)
		}
		out = append(out, line)
	}
	return out
}

// gpusExtra follows the GPUs title of the compact layout: the GPU source (the model cache is
// on the Decisions title).
func (m *Model) gpusExtra() string { return fmt.Sprintf(" (%s)", m.snap.Machine.GPUSource) }

// mainView lays the four panes out in the rows there are; panes get their rows in turn and
// show "+N more" when they do not fit.
func (m *Model) mainView(rows int) []string {
	if m.large() {
		return m.largeView(rows)
	}
	sections := []struct {
		p     pane
		extra string
		lines []string
		min   int
	}{
		{paneGPUs, m.gpusExtra(), m.gpuLines(), 1},
		{paneServices, "", m.serviceLines(), 1},
		{paneConnectors, "", m.connectorLines(), 1},
		{paneJobs, fmt.Sprintf(" (%d in flight, recent below)", len(m.snap.Jobs)), m.jobLines(), 1},
		{paneDecisions, m.decisionsSummary(), nil, 0},
	}
	budget := rows - len(sections)
	alloc := make([]int, len(sections))
	for i := range sections {
		alloc[i] = min(len(sections[i].lines), sections[i].min)
		budget -= alloc[i]
	}
	for progress := true; budget > 0 && progress; {
		progress = false
		for i := range sections {
			if budget > 0 && alloc[i] < len(sections[i].lines) {
				alloc[i]++
				budget--
				progress = true
			}
		}
	}
	var out []string
	m.ext.zones.reset()
	for i, s := range sections {
		titleRow := -1
		if s.p == paneDecisions { // one row, on its title
			titleRow = 0
		}
		m.ext.zones.add(len(out), s.p, titleRow)
		out = append(out, m.sectionTitle(s.p, s.extra))
		lines := s.lines
		if len(lines) > alloc[i] {
			keep := max(alloc[i]-1, 0)
			lines = append(lines[:keep:keep], m.styles.dim.Render(fmt.Sprintf("   +%d more", len(s.lines)-keep)))
		}
		for r := range lines {
			m.ext.zones.add(len(out)+r, s.p, r)
		}
		out = append(out, lines...)
	}
	return out
}

func (m *Model) helpView() []string {
	out := []string{m.styles.title.Render("Keys")}
	if m.height-2 > len(m.keys.all())+1 { // the blank line only where every key still fits
		out = append(out, "")
	}
	for _, b := range m.keys.all() {
		keys := strings.Join(b.keys, " / ")
		out = append(out, "  "+m.styles.key.Render(keys)+strings.Repeat(" ", max(1, 16-len([]rune(keys))))+b.help)
	}
	return out
}

func (m *Model) logsView(rows int) []string {
	state := "following"
	if !m.follow {
		state = "paused"
	}
	out := []string{m.styles.title.Render("Logs of "+m.logService) + m.styles.dim.Render(" ("+state+")")}
	var lines []string
	for _, l := range m.logs {
		if m.filter != "" && !strings.Contains(strings.ToLower(l), strings.ToLower(m.filter)) {
			continue
		}
		if m.wrap && m.width > 0 {
			for len([]rune(l)) > m.width {
				r := []rune(l)
				lines = append(lines, string(r[:m.width]))
				l = string(r[m.width:])
			}
		}
		lines = append(lines, l)
	}
	visible := rows - 1
	end := max(len(lines)-m.logScroll, 0)
	start := max(end-visible, 0)
	if len(lines) == 0 {
		out = append(out, m.styles.dim.Render("no lines yet"))
	}
	return append(out, lines[start:end]...)
}

// ansiStrip removes styling from a rendered string.
func ansiStrip(s string) string { return ansi.Strip(s) }
