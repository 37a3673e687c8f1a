package broker_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/broker"
)

// runFor claims the job id with caps, backdates its assigned_at by d, and completes it.
func (e *env) runFor(caps []byte, worker, id string, d time.Duration) {
	e.t.Helper()
	j, _, err := e.b.Claim(e.ctx, caps, 10000, 0)
	if err != nil || j == nil || j.ID != id {
		e.t.Fatalf("claim for %s: %v %v", id, j, err)
	}
	at := time.Now().Add(-d)
	if err := e.rdb.HSet(e.ctx, "job:"+id, "assigned_at", fmt.Sprintf("%d.%06d", at.Unix(), at.Nanosecond()/1000)).Err(); err != nil {
		e.t.Fatal(err)
	}
	if err := e.b.Complete(e.ctx, j, worker, jobResult()); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) stat(field string) (ewma, count int64) {
	e.t.Helper()
	v, err := e.rdb.HGet(e.ctx, broker.KeyDurationStats, field).Result()
	if err != nil {
		e.t.Fatalf("%s %s: %v", broker.KeyDurationStats, field, err)
	}
	a, b, _ := strings.Cut(v, ",")
	ewma, _ = strconv.ParseInt(a, 10, 64)
	count, _ = strconv.ParseInt(b, 10, 64)
	return ewma, count
}

// A completion records the job's duration (assigned_at to completion) as an EWMA per
// "service|model", with a count and an expiry; the hash never grows past its cap.
func TestCompletionRecordsDurationStats(t *testing.T) {
	e := newEnv(t)
	w := "m1-worker-simulation-0"
	caps := e.caps(slotCaps{id: w, mutate: func(c *broker.Capabilities) { c.Models = map[string][]string{"simulation": {"big"}} }})
	e.apiJob("a", map[string]string{"requirements": `{"models":["big"]}`})
	e.runFor(caps, w, "a", 100*time.Second)
	ewma, n := e.stat("simulation|big")
	if n != 1 || ewma < 100000 || ewma > 160000 {
		t.Fatalf("after one 100 s job: ewma %d ms, count %d", ewma, n)
	}
	e.apiJob("b", map[string]string{"requirements": `{"models":["big"]}`})
	e.runFor(caps, w, "b", 0)
	ewma2, n := e.stat("simulation|big")
	if n != 2 || ewma2 >= ewma || ewma2 < ewma*7/10 {
		t.Fatalf("after a second, instant job: ewma %d ms (was %d), count %d; want 0.8 of the old", ewma2, ewma, n)
	}
	if ttl := e.rdb.TTL(e.ctx, broker.KeyDurationStats).Val(); ttl <= 0 || ttl > broker.DurationStatsTTL {
		t.Fatalf("%s TTL %v", broker.KeyDurationStats, ttl)
	}

	fill := map[string]any{}
	for i := range broker.MaxDurationStats {
		fill[fmt.Sprintf("other|m%d", i)] = "5,1"
	}
	e.rdb.Del(e.ctx, broker.KeyDurationStats)
	e.rdb.HSet(e.ctx, broker.KeyDurationStats, fill)
	e.apiJob("c", nil)
	e.runFor(caps, w, "c", time.Second)
	if n := e.rdb.HLen(e.ctx, broker.KeyDurationStats).Val(); n != broker.MaxDurationStats {
		t.Fatalf("%s holds %d fields, cap %d", broker.KeyDurationStats, n, broker.MaxDurationStats)
	}
	if _, n := e.stat("simulation|"); n != 1 {
		t.Fatal("the new key did not replace an old one at the cap")
	}
	stats, err := e.b.DurationStats(e.ctx, []string{"simulation"}, 5)
	if err != nil || len(stats) != 1 || stats[0].Service != "simulation" || stats[0].Model != "" || stats[0].Count != 1 {
		t.Fatalf("DurationStats(simulation) = %+v, %v", stats, err)
	}
	if stats, _ := e.b.DurationStats(e.ctx, nil, 5); len(stats) != 5 {
		t.Fatalf("DurationStats(all, 5) gave %d", len(stats))
	}
}

// The fast pool prefers jobs expected to be short (from jobs:stats:duration) over a heavy job
// of higher priority. Once the heavy job has waited past the aging threshold, the fast pool
// takes it as soon as it has no short job to run; past ten times the threshold, even before
// short jobs. Without aging (the control) the same job set starves the heavy job: no heavy pool
// exists.
func TestPoolPrefersFittingJobsAndAgingPreventsStarvation(t *testing.T) {
	for _, aging := range []time.Duration{30 * time.Second, 1000 * time.Hour} {
		t.Run(aging.String(), func(t *testing.T) {
			e := newEnv(t)
			e.rdb.HSet(e.ctx, broker.KeyDurationStats, "simulation|big", "600000,5", "simulation|", "800,9")
			e.b.SetRouting(broker.Routing{PoolMax: 10 * time.Second, Aging: aging}) // the fast pool
			w := "m1-worker-simulation-0"
			fast := e.caps(slotCaps{id: w, mutate: func(c *broker.Capabilities) {
				c.Pool = "fast"
				c.Models = map[string][]string{"simulation": {"big"}}
			}})
			born := time.Now()
			e.apiJob("heavy", map[string]string{"priority": "90", "requirements": `{"models":["big"]}`, "created_at": iso(born)})
			for i := range 3 {
				id := fmt.Sprintf("short-%d", i)
				e.apiJob(id, map[string]string{"priority": "50", "created_at": iso(time.Now())})
				if got := e.claimID(fast); got != id {
					t.Fatalf("the fast pool claimed %q, want the short job %s before the young heavy one", got, id)
				}
			}
			if got := e.claimID(fast); got != "" {
				t.Fatalf("the fast pool claimed %q while the heavy job is young", got)
			}
			// The heavy job has now waited 31 s: a short job still goes first, then the heavy one.
			e.rdb.HSet(e.ctx, "job:heavy", "created_at", iso(born.Add(-31*time.Second)))
			e.apiJob("short-late", map[string]string{"priority": "50", "created_at": iso(time.Now())})
			if got := e.claimID(fast); got != "short-late" {
				t.Fatalf("the fast pool claimed %q, want short-late, which fits it", got)
			}
			got := e.claimID(fast)
			if aging < time.Hour && got != "heavy" {
				t.Fatalf("the fast pool claimed %q, want the heavy job that waited past aging", got)
			}
			if aging > time.Hour && got != "" {
				t.Fatalf("without aging the fast pool claimed %q; the heavy job should starve", got)
			}
		})
	}
}

// A job that does not fit and has waited ten times the aging threshold goes in plain priority
// order, even before jobs that fit.
func TestPoolTakesALongWaitingJobFirst(t *testing.T) {
	e := newEnv(t)
	e.rdb.HSet(e.ctx, broker.KeyDurationStats, "simulation|big", "600000,5", "simulation|", "800,9")
	e.b.SetRouting(broker.Routing{PoolMax: 10 * time.Second, Aging: 30 * time.Second})
	fast := e.caps(slotCaps{mutate: func(c *broker.Capabilities) { c.Models = map[string][]string{"simulation": {"big"}} }})
	e.apiJob("heavy", map[string]string{"priority": "90", "requirements": `{"models":["big"]}`, "created_at": iso(time.Now().Add(-59 * time.Second))})
	e.apiJob("short", map[string]string{"priority": "50", "created_at": iso(time.Now())})
	if got := e.claimID(fast); got != "short" {
		t.Fatalf("claimed %q, want the short job while the heavy one waited under 300 s", got)
	}
	e.apiJob("short2", map[string]string{"priority": "50", "created_at": iso(time.Now())})
	e.rdb.HSet(e.ctx, "job:heavy", "created_at", iso(time.Now().Add(-301*time.Second)))
	if got := e.claimID(fast); got != "heavy" {
		t.Fatalf("claimed %q, want the heavy job that waited 301 s, in priority order", got)
	}
}

// A job that names its pool is a hard match and never passed over for pool fit, and a job of
// unknown duration fits every pool.
func TestPoolFitLeavesPinnedAndUnknownJobs(t *testing.T) {
	e := newEnv(t)
	e.rdb.HSet(e.ctx, broker.KeyDurationStats, "simulation|big", "600000,5")
	e.b.SetRouting(broker.Routing{PoolMax: 10 * time.Second})
	fast := e.caps(slotCaps{mutate: func(c *broker.Capabilities) {
		c.Pool = "fast"
		c.Models = map[string][]string{"simulation": {"big", "new"}}
	}})
	e.apiJob("pinned", map[string]string{"priority": "90", "requirements": `{"pool":"fast","models":["big"]}`, "created_at": iso(time.Now())})
	e.apiJob("unknown", map[string]string{"priority": "80", "requirements": `{"models":["new"]}`, "created_at": iso(time.Now())})
	if got := e.claimID(fast); got != "pinned" {
		t.Fatalf("claimed %q, want the job pinned to the fast pool", got)
	}
	if got := e.claimID(fast); got != "unknown" {
		t.Fatalf("claimed %q, want the job of unknown duration", got)
	}
}

// Among the first K eligible jobs the claim prefers one whose models are cached on the machine,
// then one whose service is warm. A job passed over is stamped (affinity_passed_ms) the first
// time; once it has been passed over for a whole window it keeps strict priority order.
func TestAffinityWithinTheWindow(t *testing.T) {
	e := newEnv(t)
	e.b.SetRouting(broker.Routing{AffinityK: 8, AffinityWindow: 10 * time.Second,
		Cached: map[string][]string{"simulation": {"b"}}})
	w := "m1-worker-simulation-0"
	caps := e.caps(slotCaps{id: w, services: []string{"simulation", "other"}, mutate: func(c *broker.Capabilities) {
		c.Models = map[string][]string{"simulation": {"a", "b"}}
	}})
	now := time.Now()
	job := func(id, prio, model string, created time.Time) {
		e.apiJob(id, map[string]string{"priority": prio, "requirements": `{"models":["` + model + `"]}`, "created_at": iso(created)})
	}
	// A job that has waited a minute but was never passed over may be passed over once.
	job("a1", "90", "a", now.Add(-time.Minute))
	job("b1", "80", "b", now)
	if got := e.claimID(caps); got != "b1" {
		t.Fatalf("claimed %q, want b1, whose model is cached, over a1 of higher priority", got)
	}
	passed, err := e.rdb.HGet(e.ctx, "job:a1", "affinity_passed_ms").Int64()
	if err != nil || passed < now.Add(-time.Second).UnixMilli() {
		t.Fatalf("a1 was not stamped as passed over: %d %v", passed, err)
	}
	// Within its window a1 is still passed over; the stamp is not moved.
	job("b2", "80", "b", now)
	if got := e.claimID(caps); got != "b2" {
		t.Fatalf("claimed %q, want b2: a1's window is not spent", got)
	}
	if again, _ := e.rdb.HGet(e.ctx, "job:a1", "affinity_passed_ms").Int64(); again != passed {
		t.Fatalf("a1's stamp moved from %d to %d", passed, again)
	}
	// Passed over for a whole window: strict order.
	e.rdb.HSet(e.ctx, "job:a1", "affinity_passed_ms", now.Add(-11*time.Second).UnixMilli())
	job("b3", "80", "b", now)
	if got := e.claimID(caps); got != "a1" {
		t.Fatalf("claimed %q, want a1, passed over for a whole window", got)
	}
	// A job whose window is spent ends the choice: b3, behind it, is not chosen over a2 before it.
	job("a2", "95", "a", now)
	job("a3", "85", "a", now)
	e.rdb.HSet(e.ctx, "job:a3", "affinity_passed_ms", now.Add(-11*time.Second).UnixMilli())
	if got := e.claimID(caps); got != "a2" {
		t.Fatalf("claimed %q, want a2: b3 lies behind a3, whose window is spent", got)
	}
	e.rdb.Del(e.ctx, "jobs:pending")
	// Warm service: after completing an "other" job, an "other" job beats a higher simulation one.
	e.apiJob("o1", map[string]string{"service_required": "other", "created_at": iso(now)})
	e.runFor(caps, w, "o1", time.Second)
	job("a4", "90", "a", now)
	e.apiJob("o2", map[string]string{"service_required": "other", "priority": "80", "created_at": iso(now)})
	if got := e.claimID(caps); got != "o2" {
		t.Fatalf("claimed %q, want o2, whose service is warm", got)
	}
}

// With LeaveMisses a machine leaves a job whose model it lacks to a machine that has it: it
// takes a job that needs no model instead, or nothing, until the job has been passed over for a
// window. Without it (the control) the machine takes the job at once.
func TestAffinityLeavesMissesToMachinesThatHaveTheModel(t *testing.T) {
	for _, leave := range []bool{true, false} {
		t.Run(fmt.Sprint("leave=", leave), func(t *testing.T) {
			e := newEnv(t)
			e.b.SetRouting(broker.Routing{AffinityK: 8, AffinityWindow: 10 * time.Second, LeaveMisses: leave,
				Cached: map[string][]string{"simulation": {"b"}}})
			caps := e.caps(slotCaps{mutate: func(c *broker.Capabilities) {
				c.Models = map[string][]string{"simulation": {"a", "b"}}
			}})
			now := time.Now()
			e.apiJob("a1", map[string]string{"priority": "90", "requirements": `{"models":["a"]}`, "created_at": iso(now)})
			e.apiJob("plain", map[string]string{"priority": "80", "created_at": iso(now)})
			want := map[bool]string{true: "plain", false: "a1"}[leave]
			if got := e.claimID(caps); got != want {
				t.Fatalf("claimed %q, want %s", got, want)
			}
			if !leave {
				return
			}
			if got := e.claimID(caps); got != "" {
				t.Fatalf("claimed %q, want nothing: a1's model is not on this machine", got)
			}
			e.rdb.HSet(e.ctx, "job:a1", "affinity_passed_ms", now.Add(-11*time.Second).UnixMilli())
			if got := e.claimID(caps); got != "a1" {
				t.Fatalf("claimed %q, want a1, left for a whole window", got)
			}
		})
	}
}

// A pool lending itself to aged jobs of another pool prefers one whose model it has cached, even
// when another lies nearer its range.
func TestPoolLendsItselfToAJobWhoseModelItHas(t *testing.T) {
	e := newEnv(t)
	e.rdb.HSet(e.ctx, broker.KeyDurationStats, "simulation|near", "20000,5", "simulation|far", "60000,5")
	e.b.SetRouting(broker.Routing{PoolMax: 10 * time.Second, Aging: 30 * time.Second, AffinityK: 8,
		AffinityWindow: 10 * time.Second, Cached: map[string][]string{"simulation": {"far"}}})
	fast := e.caps(slotCaps{mutate: func(c *broker.Capabilities) {
		c.Models = map[string][]string{"simulation": {"near", "far"}}
	}})
	aged := iso(time.Now().Add(-40 * time.Second))
	e.apiJob("near", map[string]string{"priority": "90", "requirements": `{"models":["near"]}`, "created_at": aged})
	e.apiJob("far", map[string]string{"priority": "50", "requirements": `{"models":["far"]}`, "created_at": aged})
	if got := e.claimID(fast); got != "far" {
		t.Fatalf("claimed %q, want the job whose model is cached", got)
	}
}

// With no job that fits, the pool takes the aged job whose expected duration lies nearest its
// range: a fast pool lends itself to a standard job before a heavy one of higher priority.
func TestPoolLendsItselfToTheNearestAgedJob(t *testing.T) {
	e := newEnv(t)
	e.rdb.HSet(e.ctx, broker.KeyDurationStats, "simulation|video", "600000,5", "simulation|sd", "60000,5")
	e.b.SetRouting(broker.Routing{PoolMax: 10 * time.Second, Aging: 30 * time.Second})
	fast := e.caps(slotCaps{mutate: func(c *broker.Capabilities) {
		c.Models = map[string][]string{"simulation": {"video", "sd"}}
	}})
	aged := iso(time.Now().Add(-40 * time.Second))
	e.apiJob("heavy", map[string]string{"priority": "90", "requirements": `{"models":["video"]}`, "created_at": aged})
	e.apiJob("standard", map[string]string{"priority": "50", "requirements": `{"models":["sd"]}`, "created_at": aged})
	if got := e.claimID(fast); got != "standard" {
		t.Fatalf("claimed %q, want the standard job, nearer the fast pool than the heavy one", got)
	}
	if got := e.claimID(fast); got != "heavy" {
		t.Fatalf("claimed %q, want the heavy job next", got)
	}
}

// A machine that keeps its idle slots for its own pool (MayLend false) does not take an aged job
// of another pool, until that job has waited ten times the aging threshold.
func TestPoolReserveKeepsSlotsForItsOwnJobs(t *testing.T) {
	e := newEnv(t)
	e.rdb.HSet(e.ctx, broker.KeyDurationStats, "simulation|video", "600000,5")
	lend := false
	e.b.SetRouting(broker.Routing{PoolMax: 10 * time.Second, Aging: 30 * time.Second, MayLend: func() bool { return lend }})
	fast := e.caps(slotCaps{mutate: func(c *broker.Capabilities) { c.Models = map[string][]string{"simulation": {"video"}} }})
	e.apiJob("heavy", map[string]string{"requirements": `{"models":["video"]}`, "created_at": iso(time.Now().Add(-40 * time.Second))})
	if got := e.claimID(fast); got != "" {
		t.Fatalf("claimed %q with no slot to lend", got)
	}
	lend = true
	if got := e.claimID(fast); got != "heavy" {
		t.Fatalf("claimed %q, want the aged heavy job once a slot may be lent", got)
	}
}
