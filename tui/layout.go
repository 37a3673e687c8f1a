package tui

import (
	"fmt"
	"strings"
	"time"

	"charm.land/lipgloss/v2"

	"github.com/emp-job-queue/machine/core/control"
)

// The large layout: from about 120×36 the main screen spends its rows on history. Everything
// is computed from the size, top to bottom:
//
//	header, status
//	GPUs: per GPU its row, then utilization | memory | temperature and power graphs
//	Services (CPU, RSS and their history), Connectors, Jobs   |  queue depth, jobs/min, host CPU
//	decisions: autoscaler, model cache, demand (a labelled place until they exist)
//	log tail of the selected service
//	footer
const (
	largeMinW, largeMinH = 120, 36
	minGraphRows         = 4 // title, two rows of chart, time axis
	maxGraphRows         = 14
	minTailRows          = 4
)

// paints are the styles graphs draw with, computed once.
type paints struct{ dim, util, mem, temp, power, queue, rate, cpu paint }

func (m *Model) paints() *paints {
	if m.ext.paints == nil {
		c := func(code string) paint { return newPaint(lipgloss.NewStyle().Foreground(lipgloss.Color(code))) }
		m.ext.paints = &paints{dim: newPaint(m.styles.dim), util: c("42"), mem: c("75"), temp: c("214"), power: c("203"),
			queue: c("141"), rate: c("86"), cpu: c("180")}
	}
	return m.ext.paints
}

// large says whether the screen has room for the large layout.
func (m *Model) large() bool { return m.width >= largeMinW && m.height >= largeMinH }

// largeView is the main screen's body in the large layout: exactly rows lines.
func (m *Model) largeView(rows int) []string {
	w := m.width
	n := len(m.snap.GPUs)
	tables := m.tableLines()
	mid := min(max(len(tables), 3*minGraphRows), max(rows/3, 3*minGraphRows))
	tail := 0
	if len(m.snap.Services) > 0 {
		tail = minTailRows
	}
	decisions := 1
	// What is left goes to the GPU graphs, up to maxGraphRows each, then to the log tail.
	free := rows - 1 - n - mid - tail - decisions
	graphRows := 0
	if n > 0 {
		graphRows = min(maxGraphRows, free/n)
	}
	if graphRows < minGraphRows {
		graphRows = 0
	}
	spare := free - n*graphRows
	if tail > 0 {
		tail += spare
	} else {
		mid += spare
	}

	var out []string
	out = append(out, m.sectionTitle(paneGPUs, fmt.Sprintf(" (%s)", m.snap.Machine.GPUSource)))
	gpuRows := m.gpuLines()
	m.ext.zones.reset()
	for i, g := range m.snap.GPUs {
		m.ext.zones.add(len(out), paneGPUs, i)
		if i < len(gpuRows) {
			out = append(out, gpuRows[i])
		}
		if graphRows > 0 {
			out = append(out, m.gpuGraphs(g, w, graphRows)...)
		}
	}
	top := len(out)
	right := max(40, w/3)
	left := w - right - 1
	out = append(out, beside(m.zoneTables(tables, top, mid), left, m.trendGraphs(right, mid), right)...)
	m.ext.zones.add(len(out), paneDecisions, 0)
	out = append(out, m.decisionsLine())
	if tail > 0 {
		out = append(out, m.tailLines(tail)...)
	}
	return padLines(out, w, rows)
}

// gpuGraphs draws a GPU's utilization and memory (half the width or more together), and its
// temperature and power against their limits.
func (m *Model) gpuGraphs(g control.GPU, w, h int) []string {
	p := m.paints()
	side := max(30, w/4)
	main := (w - side - 2) / 2
	memW := w - side - 2 - main
	step := m.snap.Trends.StepMS
	util := graph{title: fmt.Sprintf("  GPU %d utilization", g.Index), now: reading(g.Util, "%.0f%%"), vals: g.History,
		lo: 0, hi: 100, unit: "%", stepMS: step, ink: p.util}
	total := 0.0
	if t, ok := val(g.MemTotalMB); ok {
		total = t
	}
	mem := graph{title: "memory", now: memReading(g), vals: g.Detail.MemHistory, lo: 0, hi: total, unit: "G", stepMS: step, ink: p.mem}
	if total == 0 {
		mem.hi, mem.unit = maxOf(g.Detail.MemHistory), "M"
	}
	limit := 0.0
	if l, ok := val(g.PowerLimit); ok {
		limit = l
	}
	th := h / 2
	temp := graph{title: "temp", now: reading(g.TempC, "%.0f°C") + m.styles.dim.Render(" limit not recorded"), vals: g.Detail.TempHistory,
		lo: 0, hi: 100, unit: "°", stepMS: step, ink: p.temp}
	power := graph{title: "power", now: reading(g.PowerW, "%.0fW") + " / " + reading(g.PowerLimit, "%.0fW limit"), vals: g.Detail.PowerHistory,
		lo: 0, hi: max(limit, maxOf(g.Detail.PowerHistory)), unit: "W", stepMS: step, ink: p.power, limit: limit}
	sideLines := append(temp.render(m, side, th), power.render(m, side, h-th)...)
	graphs := beside(util.render(m, main, h), main, mem.render(m, memW, h), memW)
	return beside(graphs, main+1+memW, sideLines, side)
}

func reading(p *float64, format string) string {
	if v, ok := val(p); ok {
		return fmt.Sprintf(format, v)
	}
	return "n/a"
}

func memReading(g control.GPU) string {
	used, ok1 := val(g.MemUsedMB)
	total, ok2 := val(g.MemTotalMB)
	switch {
	case ok1 && ok2:
		return fmt.Sprintf("%.1f / %.0f GiB", used/1024, total/1024)
	case ok1:
		return fmt.Sprintf("%.1f GiB", used/1024)
	}
	return "n/a"
}

func maxOf(vals []float64) float64 {
	m := 0.0
	for _, v := range vals {
		m = max(m, v)
	}
	return m
}

// tableLines are the Services, Connectors and Jobs panes, one under the other, remembering
// where each row is for the mouse.
func (m *Model) tableLines() []string {
	var out []string
	m.ext.tableZones = m.ext.tableZones[:0]
	add := func(p pane, title string, lines []string, rows int) {
		out = append(out, title)
		for i, l := range lines {
			if i < rows {
				m.ext.tableZones = append(m.ext.tableZones, zone{line: len(out), pane: p, row: i})
			}
			out = append(out, l)
		}
	}
	svcRows := len(m.services())
	add(paneServices, m.sectionTitle(paneServices, ""), m.largeServiceLines(), svcRows)
	add(paneConnectors, m.sectionTitle(paneConnectors, ""), m.connectorLines(), len(m.connectors()))
	add(paneJobs, m.sectionTitle(paneJobs, fmt.Sprintf(" (%d in flight, recent below)", len(m.snap.Jobs))), m.jobLines(), len(m.jobs())+len(m.snap.Recent))
	return out
}

// zoneTables cuts the tables to rows lines and records their zones at the screen offset top.
func (m *Model) zoneTables(tables []string, top, rows int) []string {
	if len(tables) > rows {
		more := len(tables) - rows + 1
		tables = append(tables[:rows-1:rows-1], m.styles.dim.Render(fmt.Sprintf("   +%d more", more)))
	}
	for _, z := range m.ext.tableZones {
		if z.line < len(tables) {
			m.ext.zones.add(top+z.line, z.pane, z.row)
		}
	}
	return tables
}

// largeServiceLines are the service rows with their CPU and RSS and a small history of each.
func (m *Model) largeServiceLines() []string {
	svcs := m.services()
	if len(svcs) == 0 {
		return []string{m.styles.dim.Render("   none: this machine runs no internal services")}
	}
	p := m.paints()
	var out []string
	for i, s := range svcs {
		st := m.styles.warn
		switch s.State {
		case "ready":
			st = m.styles.ok
		case "errored":
			st = m.styles.bad
		}
		health := m.styles.bad.Render("✗")
		if s.Healthy {
			health = m.styles.ok.Render("✓")
		}
		d := s.Detail
		line := fmt.Sprintf("%s %-14s %s %s pid %-7d ↻%-2d :%-5d up %-6s cpu %5s %s rss %6s %s", m.rowMarker(paneServices, i),
			cutPlain(s.Name, 14), st.Render(fmt.Sprintf("%-8s", s.State)), health, s.PID, s.Restarts, s.Port, dur(s.UptimeMS),
			reading(d.CPUPercent, "%.0f%%"), p.cpu.on(spark(d.CPUHistory, 0, 100, 8)), mb(d.RSSMB), p.mem.on(spark(d.RSSHistory, 0, 0, 8)))
		if s.Error != "" {
			line += " " + m.styles.bad.Render(s.Error)
		}
		out = append(out, line)
	}
	return out
}

func mb(p *float64) string {
	v, ok := val(p)
	switch {
	case !ok:
		return "n/a"
	case v >= 1024:
		return fmt.Sprintf("%.1fG", v/1024)
	}
	return fmt.Sprintf("%.0fM", v)
}

// trendGraphs are the machine-wide graphs beside the tables: queue depth, jobs/min, host CPU.
func (m *Model) trendGraphs(w, h int) []string {
	p := m.paints()
	t := m.snap.Trends
	last := func(v []float64, format string) string {
		if len(v) == 0 || v[len(v)-1] < 0 {
			return "n/a"
		}
		return fmt.Sprintf(format, v[len(v)-1])
	}
	gs := []graph{
		{title: "queue depth", now: last(t.QueueDepth, "%.0f pending"), vals: t.QueueDepth, hi: max(10, maxOf(t.QueueDepth)), stepMS: t.StepMS, ink: p.queue},
		{title: "jobs/min", now: last(t.JobsPerMin, "%.1f"), vals: t.JobsPerMin, hi: max(10, maxOf(t.JobsPerMin)), stepMS: t.StepMS, ink: p.rate},
		{title: "host CPU", now: last(t.HostCPU, "%.0f%%") + cores(m.snap.Host.Cores), vals: t.HostCPU, hi: 100, unit: "%", stepMS: t.StepMS, ink: p.cpu},
	}
	if h < 3*minGraphRows {
		gs = gs[:max(1, h/minGraphRows)]
	}
	var out []string
	for i, g := range gs {
		rows := h / len(gs)
		if i == len(gs)-1 {
			rows = h - len(out)
		}
		out = append(out, g.render(m, w, rows)...)
	}
	return out
}

// decisionsLine sums up the demand-aware work: the autoscaler's latest decision, the model
// cache and the demand the autoscaler sees. It is the Decisions pane's one row: enter, `a` or
// a second click opens its describe view (decisions.go).
func (m *Model) decisionsLine() string {
	a := m.snap.Autoscaler
	scaler, demand := "autoscaler: off", "demand: not tracked"
	if a.Note != "" && !a.On {
		scaler += " (" + a.Note + ")"
	}
	if a.On {
		scaler = "autoscaler: on, no decision yet"
		if a.Last != nil {
			scaler = fmt.Sprintf("autoscaler: %s %s ago (%s)", a.Last.What, ago(a.Last.AgeMS), a.Last.Reason)
		}
		demand = fmt.Sprintf("demand: %d pending of %d queued", a.Pending, a.Queue)
	}
	return m.sectionTitle(paneDecisions, "") + m.styles.dim.Render("  "+scaler+" · "+modelCacheText(m.snap.ModelCache)+" · "+demand+
		durationsText(m.snap.Durations, 4))
}

// modelCacheText sums up the model cache: models and bytes on disk against the budget, the
// share of jobs that found their models there, and the downloads under way.
func modelCacheText(c control.ModelCache) string {
	if !c.On {
		return "model cache: off"
	}
	s := fmt.Sprintf("model cache: %d on disk, %s/%s GB", c.OnDisk, gib(c.UsedBytes), gib(c.BudgetBytes))
	if share, ok := hitPercent(c); ok {
		s += fmt.Sprintf(", %.0f%% hits", share)
	}
	if len(c.Downloading) > 0 {
		s += fmt.Sprintf(", downloading %s", strings.Join(c.Downloading, ", "))
	}
	return s
}

// ago is a short age, e.g. 12s or 3m.
func ago(ms int64) string {
	d := time.Duration(ms) * time.Millisecond
	if d < time.Minute {
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

// tailLines are the last lines of the selected service's log, polled while the large layout
// shows them.
func (m *Model) tailLines(rows int) []string {
	svc, ok := m.selectedService()
	if !ok {
		return nil
	}
	out := []string{m.styles.title.Render("  Log of "+svc.Name) + m.styles.dim.Render(" (last lines; l opens the full log)")}
	lines := m.ext.tail
	if m.ext.tailService != svc.Name {
		lines = nil
	}
	if len(lines) == 0 {
		out = append(out, m.styles.dim.Render("   no lines yet"))
	}
	lines = lines[max(0, len(lines)-(rows-len(out))):]
	for _, l := range lines {
		out = append(out, "   "+strings.ReplaceAll(l, "\t", " "))
	}
	return out
}

func cores(n int) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf(" of %d cores", n)
}
