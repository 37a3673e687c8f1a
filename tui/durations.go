package tui

import (
	"fmt"
	"strings"
	"time"

	"github.com/emp-job-queue/machine/core/control"
)

// durationsText sums up, for the Decisions line, the expected job durations the claim's pool fit
// uses (jobs:stats:duration, most counted first): at most n kinds, e.g.
// " · expected: simulation 1.2s ×40, comfyui/sdxl 42s ×12". Empty when none is known.
func durationsText(ds []control.ExpectedDuration, n int) string {
	if len(ds) == 0 {
		return ""
	}
	parts := make([]string, 0, min(n, len(ds)))
	for _, d := range ds[:min(n, len(ds))] {
		kind := d.Service
		if d.Model != "" {
			kind += "/" + d.Model
		}
		parts = append(parts, fmt.Sprintf("%s %s ×%d", kind, shortDuration(d.EWMAMS), d.Count))
	}
	more := ""
	if len(ds) > n {
		more = fmt.Sprintf(" (+%d)", len(ds)-n)
	}
	return " · expected: " + strings.Join(parts, ", ") + more
}

// shortDuration writes ms as 850ms, 1.2s, 42s, 6m30s, 6m or 2h5m.
func shortDuration(ms int64) string {
	d := time.Duration(ms) * time.Millisecond
	switch {
	case d < time.Second:
		return d.String()
	case d < 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		s := d.Round(time.Second).String()
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		return s
	default:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	}
}
