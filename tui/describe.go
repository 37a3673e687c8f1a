package tui

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/emp-job-queue/machine/core/control"
)

// target is the row a describe view shows: a GPU's index, or a service, connector or job's
// name or id. The view follows the row through new snapshots and says so when it is gone.
type target struct {
	pane pane
	key  string
}

// extKey handles the keys of the describe view, and enter on the main screen; ok is false for
// keys the rest of the console handles.
func (m *Model) extKey(k string) (tea.Model, tea.Cmd, bool) {
	if m.filtering {
		return m, nil, false
	}
	switch m.mode {
	case modeMain:
		if m.keys.Describe.matches(k) {
			m.openDescribe()
			return m, nil, true
		}
		if m.keys.Decisions.matches(k) {
			m.focus = paneDecisions
			m.openDescribe()
			return m, nil, true
		}
	case modeDescribe:
		switch {
		case m.keys.Back.matches(k):
			m.mode = modeMain
		case m.keys.Up.matches(k):
			m.ext.descScroll = max(0, m.ext.descScroll-1)
		case m.keys.Down.matches(k):
			m.ext.descScroll++
		case m.keys.Help.matches(k):
			m.mode = modeHelp
		case m.keys.Quit.matches(k):
			model, cmd := m.quit()
			return model, cmd, true
		}
		return m, nil, true
	}
	return m, nil, false
}

// openDescribe opens the describe view of the focused pane's selected row.
func (m *Model) openDescribe() {
	t := target{pane: m.focus}
	i := m.sel[m.focus]
	switch m.focus {
	case paneGPUs:
		if i >= len(m.snap.GPUs) {
			return
		}
		t.key = strconv.Itoa(m.snap.GPUs[i].Index)
	case paneServices:
		svcs := m.services()
		if i >= len(svcs) {
			m.status = "no service to describe"
			return
		}
		t.key = svcs[i].Name
	case paneConnectors:
		conns := m.connectors()
		if i >= len(conns) {
			return
		}
		t.key = conns[i].Name
	case paneJobs:
		id, ok := m.selectedJobID()
		if !ok {
			m.status = "no job to describe"
			return
		}
		t.key = id
	case paneDecisions:
		t.key = "decisions"
	}
	m.mode, m.ext.desc, m.ext.descScroll = modeDescribe, t, 0
}

// selectedJobID is the selected row of the Jobs pane: a job in flight, then the recent ones,
// newest first, as the pane lists them.
func (m *Model) selectedJobID() (string, bool) {
	jobs := m.jobs()
	i := m.sel[paneJobs]
	if i < len(jobs) {
		return jobs[i].ID, true
	}
	k := len(m.snap.Recent) - 1 - (i - len(jobs))
	if k >= 0 && k < len(m.snap.Recent) {
		return m.snap.Recent[k].ID, true
	}
	return "", false
}

// describeView draws the describe view in rows lines, scrolled.
func (m *Model) describeView(rows int) []string {
	var lines []string
	switch m.ext.desc.pane {
	case paneGPUs:
		lines = m.describeGPU()
	case paneServices:
		lines = m.describeService()
	case paneConnectors:
		lines = m.describeConnector()
	case paneDecisions:
		lines = m.describeDecisions()
	default:
		lines = m.describeJob()
	}
	m.ext.descLines = len(lines)
	maxScroll := max(0, len(lines)-rows)
	m.ext.descScroll = min(m.ext.descScroll, maxScroll)
	lines = lines[m.ext.descScroll:]
	if len(lines) > rows && rows > 0 {
		lines = append(lines[:rows-1:rows-1], m.styles.dim.Render(fmt.Sprintf("   ↓ %d more lines (↓/j or the wheel scrolls)", len(lines)-rows+1)))
	}
	return lines
}

// kv is a labelled line of a describe view.
func (m *Model) kv(label, value string) string {
	return "  " + m.styles.dim.Render(fmt.Sprintf("%-14s", label)) + value
}

func (m *Model) heading(s string) string { return m.styles.title.Render(s) }

func orNotRecorded(s string) string {
	if s == "" {
		return "not recorded"
	}
	return s
}

func stamp(ms int64) string {
	if ms == 0 {
		return "not recorded"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05.000 UTC")
}

// wrapText breaks s into lines of at most w runes, after indent.
func wrapText(s string, w int, indent string) []string {
	var out []string
	w = max(10, w-len(indent))
	for _, para := range strings.Split(s, "\n") {
		r := []rune(para)
		for len(r) > w {
			out = append(out, indent+string(r[:w]))
			r = r[w:]
		}
		out = append(out, indent+string(r))
	}
	return out
}

func (m *Model) describeJob() []string {
	id := m.ext.desc.key
	var (
		job      *control.Job
		finished *control.Finished
	)
	for i := range m.snap.Jobs {
		if m.snap.Jobs[i].ID == id {
			job = &m.snap.Jobs[i]
		}
	}
	for i := range m.snap.Recent {
		if m.snap.Recent[i].ID == id {
			finished = &m.snap.Recent[i]
		}
	}
	if job == nil && finished == nil {
		return []string{m.heading("Job " + id), "", m.styles.dim.Render("  no longer in this machine's snapshot (it keeps the last 20 finished jobs)")}
	}
	var d control.JobDetail
	var out []string
	if job != nil {
		d = job.Detail
		out = append(out, m.heading("Job "+id)+"  "+m.styles.warn.Render("in flight"), "",
			m.kv("service", job.Service), m.kv("connector", job.Connector), m.kv("worker", job.Slot+fmt.Sprintf("  (GPU %d)", job.GPU)))
	} else {
		d = finished.Detail
		st := m.styles.ok
		if finished.Outcome != "completed" {
			st = m.styles.bad
		}
		out = append(out, m.heading("Job "+id)+"  "+st.Render(string(finished.Outcome)), "",
			m.kv("service", finished.Service), m.kv("worker", orNotRecorded(finished.Slot)))
	}
	attempt := "not recorded"
	if d.Attempt > 0 {
		attempt = fmt.Sprintf("%d of %d (retries used %d, allowed %d)", d.Attempt, d.MaxRetries+1, d.Attempt-1, d.MaxRetries)
	}
	out = append(out, m.kv("customer", orNotRecorded(d.Customer)), m.kv("priority", orNotRecorded(d.Priority)),
		m.kv("attempt", attempt), m.kv("requirements", orNotRecorded(d.Requirements)))
	if d.Workflow != "" {
		out = append(out, m.kv("workflow", d.Workflow))
	}
	out = append(out, "", m.heading("Timings"), m.kv("created", stamp(d.CreatedMS)), m.kv("claimed", stamp(d.StartedMS)))
	if d.CreatedMS > 0 && d.StartedMS > 0 {
		out = append(out, m.kv("waited", dur(d.StartedMS-d.CreatedMS)))
	}
	if job != nil {
		out = append(out, m.kv("running for", dur(job.ElapsedMS)))
	} else {
		out = append(out, m.kv("ended", stamp(finished.EndedMS)), m.kv("took", dur(finished.DurationMS)))
	}
	out = append(out, "", m.heading("Progress"))
	if job != nil {
		out = append(out, "  "+m.bar(job.Progress, 30)+fmt.Sprintf(" %3.0f%%  %s", job.Progress, job.Message))
	}
	if len(d.Steps) == 0 {
		out = append(out, m.styles.dim.Render("  no progress reported"))
	} else {
		pcts := make([]float64, len(d.Steps))
		for i, s := range d.Steps {
			pcts[i] = s.Percent
		}
		out = append(out, "  "+m.paints().util.on(spark(pcts, 0, 100, min(len(pcts), 60)))+m.styles.dim.Render(fmt.Sprintf("  %d reports", len(d.Steps))))
		first := d.Steps[0].AtMS
		if d.StartedMS > 0 {
			first = d.StartedMS
		}
		for _, s := range d.Steps[max(0, len(d.Steps)-8):] {
			out = append(out, fmt.Sprintf("  +%-7s %3.0f%%  %s", dur(s.AtMS-first), s.Percent, s.Message))
		}
	}
	out = append(out, "", m.heading("Payload")+m.styles.dim.Render(" (summary: secrets cut, long values shortened)"))
	if len(d.Payload) == 0 {
		out = append(out, m.styles.dim.Render("  not recorded"))
	}
	for _, f := range d.Payload {
		out = append(out, m.kv(f.Key, f.Value))
	}
	out = append(out, "", m.heading("Resources")+m.styles.dim.Render(" (the result's metadata.resources)"))
	out = append(out, m.resourceLines(d.Resources)...)
	if finished != nil && finished.Error != "" {
		out = append(out, "", m.heading("Error"))
		for _, l := range wrapText(finished.Error, m.width, "  ") {
			out = append(out, m.styles.bad.Render(l))
		}
	}
	return out
}

// resourceLines lists a job's metadata.resources, whatever keys it holds; the hook for the
// per-job resource record.
func (m *Model) resourceLines(res map[string]any) []string {
	if len(res) == 0 {
		return []string{m.styles.dim.Render("  not recorded")}
	}
	keys := make([]string, 0, len(res))
	for k := range res {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		out = append(out, m.kv(k, fmt.Sprint(res[k])))
	}
	return out
}

func (m *Model) describeService() []string {
	name := m.ext.desc.key
	i := slices.IndexFunc(m.snap.Services, func(s control.Service) bool { return s.Name == name })
	if i < 0 {
		return []string{m.heading("Service " + name), "", m.styles.dim.Render("  no longer run by this machine")}
	}
	s := m.snap.Services[i]
	d := s.Detail
	health := m.styles.bad.Render("✗ unhealthy")
	if s.Healthy {
		health = m.styles.ok.Render("✓ healthy")
	}
	gpuText := "not bound"
	if d.GPU >= 0 {
		gpuText = strconv.Itoa(d.GPU)
	}
	cmd := orNotRecorded(strings.Join(d.Command, " "))
	out := []string{m.heading("Service "+name) + "  " + s.State + "  " + health, ""}
	out = append(out, "  "+m.styles.dim.Render("command"))
	out = append(out, wrapText(cmd, m.width, "    ")...)
	adopted := "no"
	if d.Adopted {
		adopted = "yes (re-attached after a machine restart)"
	}
	out = append(out, m.kv("pid", strconv.Itoa(s.PID)), m.kv("port", strconv.Itoa(s.Port)), m.kv("GPU", gpuText),
		m.kv("up", dur(s.UptimeMS)), m.kv("adopted", adopted), "", m.heading("Probe"), m.kv("probe", orNotRecorded(d.Probe)))
	switch {
	case s.Healthy:
		out = append(out, m.kv("result", m.styles.ok.Render("passing")))
	case s.Error != "":
		out = append(out, m.kv("result", m.styles.bad.Render(s.Error)))
	default:
		out = append(out, m.kv("result", "not passing yet"))
	}
	w := max(10, min(60, m.width-30))
	p := m.paints()
	out = append(out, "", m.heading("Resources"),
		m.kv("CPU", fmt.Sprintf("%-6s %s", reading(d.CPUPercent, "%.0f%%"), p.cpu.on(spark(d.CPUHistory, 0, 100, w)))),
		m.kv("RSS", fmt.Sprintf("%-6s %s", mb(d.RSSMB), p.mem.on(spark(d.RSSHistory, 0, 0, w)))),
		"", m.heading("Restarts")+m.styles.dim.Render(fmt.Sprintf(" (%d)", s.Restarts)))
	if len(d.Exits) == 0 {
		out = append(out, m.styles.dim.Render("  no exit recorded"))
	}
	for _, e := range slices.Backward(d.Exits) {
		out = append(out, "  "+m.styles.dim.Render(stamp(e.AtMS))+"  "+e.Reason)
	}
	out = append(out, "", m.heading("Recent log")+m.styles.dim.Render(" (l opens the full log)"))
	if m.ext.tailService == name && len(m.ext.tail) > 0 {
		for _, l := range m.ext.tail[max(0, len(m.ext.tail)-10):] {
			out = append(out, "  "+l)
		}
	} else {
		out = append(out, m.styles.dim.Render("  no lines fetched yet"))
	}
	return out
}

func (m *Model) describeConnector() []string {
	name := m.ext.desc.key
	i := slices.IndexFunc(m.snap.Connectors, func(c control.Connector) bool { return c.Name == name })
	if i < 0 {
		return []string{m.heading("Connector " + name), "", m.styles.dim.Render("  no longer known to this machine")}
	}
	c := m.snap.Connectors[i]
	out := []string{m.heading("Connector "+name) + "  " + string(c.State), "",
		m.kv("slots", fmt.Sprintf("%d (%d busy)", c.Slots, c.Busy)), m.kv("done", fmt.Sprint(c.Done)), m.kv("failed", fmt.Sprint(c.Failed))}
	out = append(out, m.throttleLines(c.Throttle)...)
	out = append(out, "", m.heading("Slots"))
	var errs []string
	if c.Throttle != nil {
		for _, e := range c.Throttle.Errors {
			errs = append(errs, wrapText(stamp(e.AtMS)+"  "+e.Text, m.width, "  ")...)
		}
	}
	for _, sl := range m.snap.Slots {
		if sl.Connector != name {
			continue
		}
		job := m.styles.dim.Render("—")
		if sl.JobID != "" {
			job = short(sl.JobID)
		}
		out = append(out, fmt.Sprintf("  %-40s %-8s GPU %-3s job %-8s done %-5d failed %-4d idle %s", cutPlain(sl.ID, 40), sl.Status,
			gpuOf(sl.GPU), job, sl.Completed, sl.Failed, dur(sl.IdleMS)))
		if sl.LastError != "" {
			errs = append(errs, "  "+cutPlain(sl.ID, 40)+": "+sl.LastError)
		}
	}
	if c.Slots == 0 {
		out = append(out, m.styles.dim.Render("  none"))
	}
	out = append(out, "", m.heading("Last errors"))
	if len(errs) == 0 {
		out = append(out, m.styles.dim.Render("  none"))
	}
	for _, e := range errs {
		out = append(out, m.styles.bad.Render(e))
	}
	return out
}

// throttleLines are a connector's rate-limit and breaker lines: how its remote API pushes back.
func (m *Model) throttleLines(t *control.Throttle) []string {
	if t == nil {
		none := m.styles.dim.Render("none (only remote API connectors report it)")
		return []string{m.kv("rate limit", none), m.kv("breaker", m.styles.dim.Render("none"))}
	}
	limit := fmt.Sprintf("%d × 429 in the last minute, %d since start", t.RateLimited1m, t.RateLimitedTotal)
	if t.RateLimited1m > 0 {
		limit = m.styles.warn.Render(limit)
	}
	retry := m.styles.dim.Render("never asked")
	if t.RetryAfterAtMS != 0 {
		retry = "none given"
		if t.RetryAfterMS > 0 {
			retry = dur(t.RetryAfterMS)
		}
		retry += ", last 429 at " + stamp(t.RetryAfterAtMS)
	}
	breaker := t.Breaker + " since " + stamp(t.BreakerSinceMS)
	switch t.Breaker {
	case "open":
		breaker = m.styles.bad.Render(breaker + ": its jobs are left to other machines")
	case "half-open":
		breaker = m.styles.warn.Render(breaker + ": trying one request")
	}
	state := m.styles.dim.Render("not throttled")
	if t.Throttled {
		state = m.styles.warn.Render("throttled: " + t.Why)
	}
	return []string{m.kv("rate limit", limit), m.kv("Retry-After", retry), m.kv("breaker", breaker), m.kv("throttle", state)}
}

func gpuOf(i int) string {
	if i < 0 {
		return "—"
	}
	return strconv.Itoa(i)
}

func (m *Model) describeGPU() []string {
	idx, _ := strconv.Atoi(m.ext.desc.key)
	i := slices.IndexFunc(m.snap.GPUs, func(g control.GPU) bool { return g.Index == idx })
	if i < 0 {
		return []string{m.heading("GPU " + m.ext.desc.key), "", m.styles.dim.Render("  not in this machine's inventory")}
	}
	g := m.snap.GPUs[i]
	d := g.Detail
	state := m.styles.ok.Render("in service")
	if !g.Healthy {
		state = m.styles.bad.Render("OUT OF SERVICE: " + g.Reason)
	}
	mig := "off"
	if g.MIG {
		mig = "on (per-GPU utilization is n/a)"
	}
	pstate := "n/a"
	if v, ok := val(d.PState); ok {
		pstate = fmt.Sprintf("P%.0f", v)
	}
	out := []string{m.heading(fmt.Sprintf("GPU %d  %s", g.Index, g.Name)) + "  " + state, "",
		m.kv("uuid", orNotRecorded(d.UUID)), m.kv("MIG", mig), m.kv("source", m.snap.Machine.GPUSource),
		m.kv("utilization", reading(g.Util, "%.0f%%")), m.kv("memory busy", reading(d.UtilMemory, "%.0f%%")),
		m.kv("memory", memReading(g)), m.kv("temperature", reading(g.TempC, "%.0f °C")),
		m.kv("power", reading(g.PowerW, "%.0f W")+" of "+reading(g.PowerLimit, "%.0f W")+" limit"),
		m.kv("fan", reading(d.FanPct, "%.0f%%")), m.kv("SM clock", reading(d.SMClockMHz, "%.0f MHz")),
		m.kv("memory clock", reading(d.MemClockMHz, "%.0f MHz")), m.kv("pstate", pstate),
		m.kv("encoder", reading(d.EncoderUtil, "%.0f%%")), m.kv("decoder", reading(d.DecoderUtil, "%.0f%%")),
		"", m.heading("Health events (XID, ECC)")}
	if g.Healthy {
		out = append(out, m.styles.dim.Render("  none recorded"))
	} else {
		out = append(out, m.styles.bad.Render("  "+g.Reason))
	}
	out = append(out, "", m.heading("Processes")+m.styles.dim.Render(" (host PIDs)"))
	if len(d.Processes) == 0 {
		out = append(out, m.styles.dim.Render("  none reported"))
	}
	for _, p := range d.Processes {
		out = append(out, fmt.Sprintf("  pid %-8d %8.0f MiB", p.PID, p.MemoryMB))
	}
	out = append(out, "", m.heading("Jobs"))
	if len(g.Jobs) == 0 {
		out = append(out, m.styles.dim.Render("  idle"))
	}
	for _, j := range g.Jobs {
		out = append(out, "  "+j)
	}
	if m.width >= 60 {
		step := m.snap.Trends.StepMS
		out = append(out, "")
		out = append(out, graph{title: "utilization", now: reading(g.Util, "%.0f%%"), vals: g.History, hi: 100, unit: "%", stepMS: step, ink: m.paints().util}.render(m, m.width, 8)...)
	}
	return out
}

// Kind is what a describe view shows, for DescribeFrame.
type Kind int

const (
	DescribeGPU Kind = iota
	DescribeService
	DescribeConnector
	DescribeJob
	DescribeDecisions // key ignored
)

// DescribeFrame renders the describe view of one row (a GPU's index, a service or connector
// name, a job id) exactly as the console draws it; for screenshots, goldens and tests.
func DescribeFrame(snap control.Snapshot, kind Kind, key string, width, height int) string {
	m := New(nil, Options{})
	m.snap, m.have, m.width, m.height = snap, true, width, height
	panes := [...]pane{DescribeGPU: paneGPUs, DescribeService: paneServices, DescribeConnector: paneConnectors, DescribeJob: paneJobs, DescribeDecisions: paneDecisions}
	m.focus = panes[kind]
	m.mode, m.ext.desc = modeDescribe, target{pane: panes[kind], key: key}
	return m.render()
}
