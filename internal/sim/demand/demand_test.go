package demand_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/internal/sim/demand"
)

// The quick scenario runs the real components end to end and reports every key of the
// simulator's contract, with the demand-aware machine ahead of the baseline.
func TestQuickRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := demand.Run(ctx, demand.Options{Quick: true})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(rep)
	t.Logf("%s", out)
	for _, k := range []string{"model_cache_hit_rate", "baseline_model_cache_hit_rate", "demand_shift_first_claim_s",
		"baseline_demand_shift_first_claim_s", "bytes_downloaded", "baseline_bytes_downloaded", "flaps"} {
		if !strings.Contains(string(out), `"`+k+`":`) {
			t.Errorf("report lacks %s", k)
		}
	}
	if rep.Jobs == 0 || rep.CacheBudgetBytes >= rep.ModelSetBytes {
		t.Fatalf("the scenario is not the one asked for: %+v", rep)
	}
	if rep.Flaps != 0 {
		t.Errorf("%d flaps", rep.Flaps)
	}
	// The hit-rate and bytes goals are judged on the full trace (cmd/sim); the quick one is
	// dominated by first downloads, so its figures are only logged.
	if rep.DemandShiftFirstClaimS <= 0 || rep.DemandShiftFirstClaimS*5 > rep.BaselineDemandShiftClaimS {
		t.Errorf("first claim after the shift %.0fs, baseline %.0fs: not 5× sooner", rep.DemandShiftFirstClaimS, rep.BaselineDemandShiftClaimS)
	}
}
