package tui

import (
	"fmt"
	"slices"
	"strings"

	"github.com/emp-job-queue/machine/core/control"
)

// The Decisions pane: the demand-aware work in one place. The main screen gives it one line
// (the large layout's Decisions line, the compact layout's Decisions title); enter, `a` or a
// second click on that line opens its describe view: the autoscaler and its recent decisions,
// the demand the machine's tracker sees, the model cache and the expected job durations.

// decisionsSummary follows the compact layout's Decisions title: the model cache, the
// autoscaler and the demand.
func (m *Model) decisionsSummary() string {
	a := m.snap.Autoscaler
	scaler := "autoscaler: off"
	if a.On {
		scaler = "autoscaler: on"
		if a.Last != nil {
			scaler += ", last: " + a.Last.What + " " + ago(a.Last.AgeMS) + " ago"
		}
	}
	return "  " + modelCacheText(m.snap.ModelCache) + " · " + scaler + " · " + demandText(m.snap.Demand) + "  (a: more)"
}

// demandText sums up the demand tracker's view: the pending jobs it attributes to services and
// the fastest arrivals.
func demandText(d control.Demand) string {
	if !d.Tracked {
		return "demand: not tracked"
	}
	pending := 0
	for _, s := range d.Services {
		pending += s.Pending
	}
	return fmt.Sprintf("demand: %d pending in %d service(s)", pending, len(d.Services))
}

// describeDecisions is the Decisions view.
func (m *Model) describeDecisions() []string {
	out := []string{m.heading("Decisions") + m.styles.dim.Render("  autoscaler, demand, model cache, expected durations"), ""}
	out = append(out, m.autoscalerLines()...)
	out = append(out, "")
	out = append(out, m.demandLines()...)
	out = append(out, "")
	out = append(out, m.modelCacheLines()...)
	out = append(out, "")
	return append(out, m.durationLines()...)
}

func (m *Model) autoscalerLines() []string {
	a := m.snap.Autoscaler
	if !a.On {
		why := a.Note
		if why == "" {
			why = "no reason recorded"
		}
		return append([]string{m.heading("Autoscaler") + "  " + m.styles.warn.Render("off")}, wordWrap(why, m.width, "  ")...)
	}
	out := []string{m.heading("Autoscaler") + "  " + m.styles.ok.Render("on")}
	if a.Note != "" {
		out = append(out, m.kv("waiting", a.Note))
	}
	out = append(out, m.kv("demand", fmt.Sprintf("%d pending job(s) attributed to a service, %d in jobs:pending", a.Pending, a.Queue)),
		"", m.heading("Recent decisions")+m.styles.dim.Render(fmt.Sprintf(" (%d kept, newest first)", a.Count)))
	if len(a.Recent) == 0 {
		return append(out, m.styles.dim.Render("  none yet: the demand has asked for no change"))
	}
	for _, d := range slices.Backward(a.Recent) {
		out = append(out, "  "+m.styles.dim.Render(fmt.Sprintf("%8s ago  ", ago(d.AgeMS)))+d.What)
		out = append(out, wordWrap("why: "+d.Reason, m.width, "               ")...)
		st := m.styles.dim
		if !strings.Contains(d.Outcome, "change") {
			st = m.styles.bad
		}
		for _, l := range wordWrap("→ "+orNotRecorded(d.Outcome), m.width, "               ") {
			out = append(out, st.Render(l))
		}
	}
	return out
}

func (m *Model) demandLines() []string {
	d := m.snap.Demand
	if !d.Tracked {
		why := d.Note
		if why == "" {
			why = "no reason recorded"
		}
		return append([]string{m.heading("Demand") + "  " + m.styles.warn.Render("off")}, wordWrap(why, m.width, "  ")...)
	}
	out := []string{m.heading("Demand") + m.styles.dim.Render(fmt.Sprintf(" (the machine's demand tracker, as of %s ago)", ago(d.AgeMS)))}
	out = append(out, m.kv("queue", fmt.Sprintf("%d pending when last reconciled, %d unattributed", d.QueueLength, d.Unattributed)))
	if len(d.Services) == 0 {
		out = append(out, m.styles.dim.Render("  no service has pending jobs or recent arrivals"))
	} else {
		out = append(out, m.styles.dim.Render(fmt.Sprintf("  %-24s %8s %12s", "service", "pending", "arrivals/min")))
		for _, s := range d.Services {
			out = append(out, fmt.Sprintf("  %-24s %8d %12.2f", cutPlain(s.Service, 24), s.Pending, s.PerMin))
		}
	}
	if len(d.Models) > 0 {
		out = append(out, m.styles.dim.Render(fmt.Sprintf("  %-40s %8s %8s", "wanted model", "pending", "score")))
		for _, md := range d.Models {
			out = append(out, fmt.Sprintf("  %-40s %8d %8.2f", cutPlain(md.Name, 40), md.Pending, md.Score))
		}
	}
	return out
}

func (m *Model) modelCacheLines() []string {
	c := m.snap.ModelCache
	if !c.On {
		return []string{m.heading("Model cache") + "  " + m.styles.warn.Render("off"), "  MACHINE_MODEL_CACHE_GB=0: jobs' models are left to their services"}
	}
	hits := "no job has asked for a model yet"
	if share, ok := hitPercent(c); ok {
		hits = fmt.Sprintf("%d hit(s), %d miss(es): %.0f%% of jobs found their model on disk", c.Hits, c.Misses, share)
	}
	out := []string{m.heading("Model cache") + "  " + m.styles.ok.Render("on"),
		m.kv("used", gib(c.UsedBytes)+" GB of "+gib(c.BudgetBytes)+" GB"), m.kv("jobs", hits),
		m.kv("downloads", fmt.Sprintf("%d, evictions %d", c.Downloads, c.Evictions))}
	if len(c.Downloading) > 0 {
		out = append(out, m.kv("downloading", strings.Join(c.Downloading, ", ")))
	} else {
		out = append(out, m.kv("downloading", "nothing"))
	}
	out = append(out, "", m.heading("On disk")+m.styles.dim.Render(fmt.Sprintf(" (%d)", c.OnDisk)))
	if len(c.Models) == 0 {
		out = append(out, m.styles.dim.Render("  no model"))
	}
	for _, md := range c.Models {
		size := "size not in the catalogue"
		if md.Bytes > 0 {
			size = mbOrGB(md.Bytes)
		}
		out = append(out, fmt.Sprintf("  %-48s %s", cutPlain(md.Name, 48), m.styles.dim.Render(size)))
	}
	out = append(out, "", m.heading("In VRAM")+m.styles.dim.Render(" (inferred: the models of the last job completed on each GPU, not a reading)"))
	if len(c.InVRAM) == 0 {
		out = append(out, m.styles.dim.Render("  no job with a model has completed yet"))
	}
	gpus := make([]int, 0, len(c.InVRAM))
	for g := range c.InVRAM {
		gpus = append(gpus, g)
	}
	slices.Sort(gpus)
	for _, g := range gpus {
		out = append(out, m.kv(fmt.Sprintf("GPU %d", g), strings.Join(c.InVRAM[g], ", ")))
	}
	return out
}

func (m *Model) durationLines() []string {
	out := []string{m.heading("Expected durations") + m.styles.dim.Render(" (jobs:stats:duration, which the claim's pool fit uses)")}
	if len(m.snap.Durations) == 0 {
		return append(out, m.styles.dim.Render("  none known yet for this machine's services"))
	}
	out = append(out, m.styles.dim.Render(fmt.Sprintf("  %-40s %10s %8s", "service/model", "expected", "jobs")))
	for _, d := range m.snap.Durations {
		kind := d.Service
		if d.Model != "" {
			kind += "/" + d.Model
		}
		out = append(out, fmt.Sprintf("  %-40s %10s %8d", cutPlain(kind, 40), shortDuration(d.EWMAMS), d.Count))
	}
	return out
}

// gib writes a size in bytes as GB with one decimal, without the unit.
func gib(n int64) string { return fmt.Sprintf("%.1f", float64(n)/(1<<30)) }

// hitPercent is the share of the cache's lookups that found their model on disk; false before
// any lookup.
func hitPercent(c control.ModelCache) (float64, bool) {
	n := c.Hits + c.Misses
	if n == 0 {
		return 0, false
	}
	return 100 * float64(c.Hits) / float64(n), true
}

// mbOrGB writes a size in bytes as MB below a GB, else GB.
func mbOrGB(n int64) string {
	if n < 1<<30 {
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2f GB", float64(n)/(1<<30))
}

// wordWrap breaks s into lines of at most w cells after indent, between words where it can.
func wordWrap(s string, w int, indent string) []string {
	w = max(10, w-len([]rune(indent)))
	var out []string
	line := ""
	for _, word := range strings.Fields(s) {
		for len([]rune(word)) > w { // a word longer than a line is cut
			if line != "" {
				out, line = append(out, indent+line), ""
			}
			r := []rune(word)
			out, word = append(out, indent+string(r[:w])), string(r[w:])
		}
		switch {
		case line == "":
			line = word
		case len([]rune(line))+1+len([]rune(word)) <= w:
			line += " " + word
		default:
			out, line = append(out, indent+line), word
		}
	}
	return append(out, indent+line)
}
