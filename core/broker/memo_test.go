package broker_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
)

// A non-match is remembered per capability set until the job is written again (the API's
// resubmission gives it a new score) or the capabilities change.
func TestNonMatchesAreRememberedUntilTheJobOrCapabilitiesChange(t *testing.T) {
	e := newEnv(t)
	caps := e.caps(slotCaps{})
	memo := broker.NoMatchPrefix + broker.Fingerprint(caps)
	e.apiJob("big", req(`{"hardware":{"gpu_memory_gb":48}}`))
	if id := e.claimID(caps); id != "" {
		t.Fatalf("claimed %q", id)
	}
	remembered, err := strconv.ParseFloat(e.rdb.HGet(e.ctx, memo, "big").Val(), 64)
	if err != nil || remembered != e.rdb.ZScore(e.ctx, "jobs:pending", "big").Val() {
		t.Fatalf("%s remembers big at %v (%v), want its score", memo, remembered, err)
	}
	if ttl := e.rdb.TTL(e.ctx, memo).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("the memory of non-matches expires in %v, want within a minute", ttl)
	}

	// While the job keeps its place in line it is not read again: a change made in place (which
	// the API never makes) is not seen.
	e.rdb.HSet(e.ctx, "job:big", "requirements", `{"hardware":{"gpu_memory_gb":8}}`)
	if id := e.claimID(caps); id != "" {
		t.Fatalf("claimed %q: the remembered non-match was read again", id)
	}
	// Written again, as the API writes a job (a new created_at, so a new score): read again.
	e.apiJob("big", map[string]string{"requirements": `{"hardware":{"gpu_memory_gb":8}}`, "created_at": iso(time.Now())})
	if id := e.claimID(caps); id != "big" {
		t.Fatalf("claimed %q after the job was written again, want big", id)
	}

	// New capabilities are a new memory.
	e.apiJob("huge", req(`{"hardware":{"gpu_memory_gb":80}}`))
	if id := e.claimID(caps); id != "" {
		t.Fatalf("claimed %q", id)
	}
	bigger := e.caps(slotCaps{mutate: func(c *broker.Capabilities) { c.Hardware.GPUMemoryGB = 80 }})
	if id := e.claimID(bigger); id != "huge" {
		t.Fatalf("a slot with 80 GB claimed %q, want the job remembered as no match for 24 GB", id)
	}
}

// The slots of one kind share a memory, so a non-match that depends on which slot asks (a
// requirement on worker_id or machine_id) is never remembered.
func TestSlotsShareTheMemoryButNotTheirOwnIDs(t *testing.T) {
	e := newEnv(t)
	w0, w1 := e.caps(slotCaps{id: "m1-worker-simulation-0"}), e.caps(slotCaps{id: "m1-worker-simulation-1"})
	other := e.caps(slotCaps{id: "m2-worker-simulation-0", mutate: func(c *broker.Capabilities) { c.MachineID = "m2" }})
	if broker.Fingerprint(w0) != broker.Fingerprint(w1) || broker.Fingerprint(w0) != broker.Fingerprint(other) {
		t.Fatal("slots that differ only in worker_id and machine_id have different fingerprints")
	}
	e.apiJob("pinned", req(`{"worker_id":"m1-worker-simulation-1"}`))
	if id := e.claimID(w0); id != "" {
		t.Fatalf("worker 0 claimed %q", id)
	}
	if e.rdb.HExists(e.ctx, broker.NoMatchPrefix+broker.Fingerprint(w0), "pinned").Val() {
		t.Fatal("a non-match that depends on the worker id was remembered for every slot")
	}
	if id := e.claimID(w1); id != "pinned" {
		t.Fatalf("worker 1 claimed %q, want the job pinned to it", id)
	}
}

// One call does bounded work, the next resumes where it stopped, so a job behind thousands of
// same-service jobs no worker matches is reached in one pass of the queue; once their
// non-matches are remembered, the same pass takes a fraction of the calls.
func TestWorkBudgetReachesADeepJob(t *testing.T) {
	e := newEnv(t)
	const ahead, budget = 3000, 500
	pipe := e.rdb.Pipeline()
	for i := range ahead {
		id := fmt.Sprintf("huge-%d", i)
		pipe.HSet(e.ctx, "job:"+id, "id", id, "service_required", "simulation", "priority", "90", "payload", "{}",
			"requirements", `{"hardware":{"gpu_memory_gb":9999}}`, "status", "pending")
		pipe.ZAdd(e.ctx, "jobs:pending", redis.Z{Score: float64(90e15 - i), Member: id})
	}
	if _, err := pipe.Exec(e.ctx); err != nil {
		t.Fatal(err)
	}
	caps := e.caps(slotCaps{})
	pass := func() int {
		e.apiJob("deep", nil)
		var cursor int64
		for calls := 1; ; calls++ {
			j, next, err := e.b.Claim(e.ctx, caps, budget, cursor)
			if err != nil {
				t.Fatal(err)
			}
			if j != nil {
				if j.ID != "deep" {
					t.Fatalf("claimed %q", j.ID)
				}
				return calls
			}
			if next <= cursor {
				t.Fatalf("call %d: the cursor went from %d to %d and the deep job was not claimed", calls, cursor, next)
			}
			cursor = next
		}
	}
	cold := pass()
	warm := pass()
	t.Logf("calls to reach the job: %d reading every job, %d remembering", cold, warm)
	if cold < 2 || warm*3 > cold {
		t.Fatalf("calls to reach the job: %d reading every job, %d with their non-matches remembered", cold, warm)
	}
	if n := e.rdb.ZCard(e.ctx, "jobs:pending").Val(); n != ahead {
		t.Fatalf("jobs:pending holds %d, want the %d unmatchable jobs untouched", n, ahead)
	}
}
