package tui

import (
	"fmt"
	"strings"

	"github.com/emp-job-queue/machine/core/job"
)

// costLines summarize each service's jobs over the last hour: how many, their mean and p95 run
// time and GPU energy, and the GPU-seconds they held.
func (m *Model) costLines() []string {
	var out []string
	for _, c := range m.snap.Costs {
		line := fmt.Sprintf("  1h %-12s %4d jobs  run %s p95 %s", cutPlain(c.Service, 12), c.Jobs, secs(c.RunMeanMS), secs(c.RunP95MS))
		if c.WhMean != nil && c.WhP95 != nil {
			line += fmt.Sprintf("  %s Wh/job p95 %s", wh(*c.WhMean), wh(*c.WhP95))
		}
		if c.GPUSeconds > 0 {
			line += fmt.Sprintf("  %.0f GPU·s", c.GPUSeconds)
		}
		out = append(out, m.styles.dim.Render(line))
	}
	return out
}

// resourceBrief is a finished job's resource record in a few cells: GPU-seconds and energy, or
// what the API reported.
func resourceBrief(r *job.Resources) string {
	if r == nil {
		return ""
	}
	var parts []string
	if r.PrepareMS > 0 {
		parts = append(parts, "prep "+secs(float64(r.PrepareMS)))
	}
	if r.GPUSeconds != nil {
		parts = append(parts, fmt.Sprintf("%.1f GPU·s", *r.GPUSeconds))
	}
	if r.GPUEnergyWh != nil {
		parts = append(parts, wh(*r.GPUEnergyWh)+" Wh")
	}
	if r.GPUPeakMemoryMB != nil {
		parts = append(parts, fmt.Sprintf("%.1fG", *r.GPUPeakMemoryMB/1024))
	}
	if r.CPUSeconds != nil {
		parts = append(parts, fmt.Sprintf("cpu %.1fs", *r.CPUSeconds))
	}
	for _, k := range []string{"total_tokens", "predict_time", "executionTime"} {
		if v, ok := r.APIUsage[k].(float64); ok {
			parts = append(parts, fmt.Sprintf("%s %g", k, v))
		}
	}
	if r.CostUSD != nil {
		parts = append(parts, fmt.Sprintf("$%.4f", *r.CostUSD))
	}
	return strings.Join(parts, " ")
}

// secs shows milliseconds as seconds with one decimal below a minute, else as dur does.
func secs(ms float64) string {
	if ms < 60000 {
		return fmt.Sprintf("%.1fs", ms/1000)
	}
	return dur(int64(ms))
}

// wh shows watt-hours with three significant digits.
func wh(v float64) string { return fmt.Sprintf("%.3g", v) }
