package main

import (
	"testing"
)

// The quick fleet scenario runs real machines' slots and wake-up code against a real
// redis-server and reports every figure; a job costs at most 3 claim scripts at every size
// (a count, not a time).
func TestQuickFleetScenario(t *testing.T) {
	report, table, err := fleetScenario(opts{quick: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + table)
	for _, k := range []string{"fleet_machines", "claim_calls_per_job", "redis_cpu_us_per_job", "pickup_p50_ms",
		"pickup_p99_ms", "small_fleet_redis_cpu_us_per_job"} {
		if _, ok := report[k]; !ok {
			t.Errorf("the report has no %s", k)
		}
	}
	for _, s := range report["fleet_sizes"].([]fleetSize) {
		if s.ClaimCallsPerJob > 3 {
			t.Errorf("%d machines: %.2f claim scripts a job, want at most 3", s.Machines, s.ClaimCallsPerJob)
		}
	}
}

// The quick demand scenario runs through cmd/sim and reports the demand-aware and baseline
// figures under the simulator's keys.
func TestQuickDemandScenario(t *testing.T) {
	report, table, err := demandScenario(opts{quick: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + table)
	for _, k := range []string{"demand_jobs", "model_cache_hit_rate", "baseline_model_cache_hit_rate",
		"demand_shift_first_claim_s", "baseline_demand_shift_first_claim_s", "flaps", "autoscale_decisions"} {
		if _, ok := report[k]; !ok {
			t.Errorf("the report has no %s", k)
		}
	}
	if _, ok := report["jobs"]; ok {
		t.Error(`the report keeps "jobs", which the fleet scenario's figures could be confused with`)
	}
}
