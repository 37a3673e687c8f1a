package config

import (
	"fmt"
	"strings"
	"time"
)

// Pool durations by name: a machine of a named pool prefers the jobs whose expected duration
// (jobs:stats:duration) falls in its range. Other names have no range unless
// MACHINE_POOL_DURATION gives one.
var poolDurations = map[string][2]time.Duration{
	"fast":     {0, 10 * time.Second},
	"standard": {10 * time.Second, 5 * time.Minute},
	"heavy":    {5 * time.Minute, 0},
}

// PoolDuration returns the expected-duration range [lo, hi) of a pool (hi 0: unbounded).
// spec, when set, is MACHINE_POOL_DURATION: "MIN-MAX" in Go durations, either side empty for
// unbounded ("-10s", "10s-5m", "5m-"). Otherwise a known pool name (fast, standard, heavy)
// gives its range, and any other name none (ok false).
func PoolDuration(pool, spec string) (lo, hi time.Duration, ok bool, err error) {
	if spec == "" {
		r, known := poolDurations[pool]
		return r[0], r[1], known, nil
	}
	a, b, found := strings.Cut(spec, "-")
	if !found {
		return 0, 0, false, fmt.Errorf("MACHINE_POOL_DURATION=%q has no '-'; write MIN-MAX as Go durations, either side may be empty (\"-10s\", \"10s-5m\", \"5m-\")", spec)
	}
	parse := func(s string) (time.Duration, error) {
		if s == "" {
			return 0, nil
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return 0, fmt.Errorf("MACHINE_POOL_DURATION=%q: %q is not a duration such as 10s or 5m", spec, s)
		}
		return d, nil
	}
	if lo, err = parse(a); err != nil {
		return 0, 0, false, err
	}
	if hi, err = parse(b); err != nil {
		return 0, 0, false, err
	}
	if hi > 0 && hi <= lo {
		return 0, 0, false, fmt.Errorf("MACHINE_POOL_DURATION=%q: the maximum must be above the minimum", spec)
	}
	return lo, hi, true, nil
}

// loadRouting reads the claim's pool and affinity preferences.
func (r *reader) loadRouting(c *Config) {
	lo, hi, ok, err := PoolDuration(c.Pool, r.str("MACHINE_POOL_DURATION", ""))
	if err != nil {
		r.problem("%v", err)
	}
	if ok {
		c.PoolMin, c.PoolMax = lo, hi
	}
	c.PoolReserve = r.intRange("MACHINE_POOL_RESERVE", 0, 0, 1024, "how many idle slots the machine keeps for its own pool's jobs, e.g. 1 (0: lend every idle slot to aged jobs)")
	c.PoolAging = r.duration("MACHINE_POOL_AGING", 30*time.Second, "how long a job waits before a pool it does not fit takes it, e.g. 30s")
	c.AffinityK = r.intRange("MACHINE_AFFINITY_K", 8, 1, 1000, "how many eligible jobs a claim chooses among, e.g. 8 (1: no affinity)")
	c.AffinityWindow = r.duration("MACHINE_AFFINITY_WINDOW", 10*time.Second, "how long a job may be passed over for affinity, from the first claim that passed it over, e.g. 10s")
	c.AffinityLeave = r.boolean("MACHINE_AFFINITY_LEAVE", false)
}
