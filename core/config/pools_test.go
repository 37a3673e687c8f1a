package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/config"
)

// A known pool name gets its duration range; MACHINE_POOL_DURATION overrides it or gives one to
// any name; a bad value is reported with the fix.
func TestPoolRouting(t *testing.T) {
	c, err := load(map[string]string{"WORKER_CONNECTORS": "mock", "MACHINE_POOL": "fast"})
	if err != nil {
		t.Fatal(err)
	}
	if c.PoolMin != 0 || c.PoolMax != 10*time.Second || c.PoolAging != 30*time.Second || c.AffinityK != 8 || c.AffinityWindow != 10*time.Second || c.AffinityLeave {
		t.Fatalf("fast pool: %v-%v aging %v k %d window %v", c.PoolMin, c.PoolMax, c.PoolAging, c.AffinityK, c.AffinityWindow)
	}
	c, err = load(map[string]string{"WORKER_CONNECTORS": "mock", "MACHINE_POOL": "gpu-a", "MACHINE_POOL_DURATION": "10s-5m",
		"MACHINE_POOL_AGING": "1m", "MACHINE_AFFINITY_K": "1", "MACHINE_POOL_RESERVE": "1",
		"MACHINE_AFFINITY_LEAVE": "true"})
	if err != nil {
		t.Fatal(err)
	}
	if c.PoolMin != 10*time.Second || c.PoolMax != 5*time.Minute || c.PoolAging != time.Minute || c.AffinityK != 1 || c.PoolReserve != 1 || !c.AffinityLeave {
		t.Fatalf("gpu-a: %v-%v aging %v k %d leave %v", c.PoolMin, c.PoolMax, c.PoolAging, c.AffinityK, c.AffinityLeave)
	}
	if _, err := load(map[string]string{"WORKER_CONNECTORS": "mock", "MACHINE_POOL_DURATION": "5m-10s"}); err == nil ||
		!strings.Contains(err.Error(), "MACHINE_POOL_DURATION") {
		t.Fatalf("error %v", err)
	}
	for spec, want := range map[string][2]time.Duration{"-10s": {0, 10 * time.Second}, "5m-": {5 * time.Minute, 0}} {
		lo, hi, ok, err := config.PoolDuration("x", spec)
		if err != nil || !ok || lo != want[0] || hi != want[1] {
			t.Errorf("%q: %v-%v %v %v", spec, lo, hi, ok, err)
		}
	}
	for _, bad := range []string{"10s", "x-5m"} {
		if _, _, _, err := config.PoolDuration("x", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, _, ok, _ := config.PoolDuration("gpu-a", ""); ok {
		t.Error("an unknown pool name without MACHINE_POOL_DURATION has a range")
	}
}
