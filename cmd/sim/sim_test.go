package main

import (
	"testing"
)

// The quick fleet scenario runs real machines' slots and wake-up code against a real
// redis-server and reports every figure; a job costs at most 3 claim scripts at every size
// The quick pools scenario runs the trace through the real claim and completion scripts on
// both fleets and reports every figure; no job starves (a count, not a time), and affinity finds
// more models on the machines' disks than the uniform fleet.
func TestQuickPoolsScenario(t *testing.T) {
	report, table, err := poolsScenario(opts{quick: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + table)
	for _, k := range []string{"fast_p95_wait_s", "baseline_fast_p95_wait_s", "affinity_model_hit_rate",
		"baseline_affinity_model_hit_rate", "pool_utilization_min", "starved_jobs"} {
		if _, ok := report[k]; !ok {
			t.Errorf("the report has no %s", k)
		}
	}
	if n := report["starved_jobs"].(int); n != 0 {
		t.Errorf("%d jobs starved", n)
	}
	if hit, base := report["affinity_model_hit_rate"].(float64), report["baseline_affinity_model_hit_rate"].(float64); hit <= base {
		t.Errorf("model hit rate %.3f with affinity, %.3f without: affinity should find more models on disk", hit, base)
	}
}
