package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/emp-job-queue/machine/internal/sim/demand"
)

// demandScenario replays a job trace against the demand tracker, the model cache and the
// autoscaler (internal/sim/demand), once demand-aware and once as the static baseline.
func demandScenario(o opts) (map[string]any, string, error) {
	r, err := demand.Run(context.Background(), demand.Options{Quick: o.quick})
	if err != nil {
		return nil, "", err
	}
	// The report's JSON keys are the simulator's contract: reuse them.
	raw, err := json.Marshal(r)
	if err != nil {
		return nil, "", err
	}
	report := map[string]any{}
	if err := json.Unmarshal(raw, &report); err != nil {
		return nil, "", err
	}
	report["demand_jobs"] = report["jobs"]
	delete(report, "jobs")

	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\tdemand-aware\tbaseline\n")
	fmt.Fprintf(w, "model cache hit rate\t%.2f\t%.2f\n", r.ModelCacheHitRate, r.BaselineModelCacheHitRate)
	fmt.Fprintf(w, "first claim after the demand shift (s)\t%.0f\t%.0f\n", r.DemandShiftFirstClaimS, r.BaselineDemandShiftClaimS)
	fmt.Fprintf(w, "bytes downloaded\t%d\t%d\n", r.BytesDownloaded, r.BaselineBytesDownloaded)
	fmt.Fprintf(w, "evictions\t%d\t%d\n", r.Evictions, r.BaselineEvictions)
	fmt.Fprintf(w, "mean job wait (s)\t%.1f\t%.1f\n", r.MeanWaitS, r.BaselineMeanWaitS)
	_ = w.Flush()
	fmt.Fprintf(&b, "%d jobs; %d autoscale decisions, %d flaps\n", r.Jobs, r.Decisions, r.Flaps)
	return report, b.String(), nil
}
