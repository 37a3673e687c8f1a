package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
)

// A non-match is remembered per capability set until the job is written again (re-queued by a
// worker, or resubmitted through the API: every process that hears job_requeued or
// job_submitted forgets it) or the capabilities change.
func TestNonMatchesAreRememberedUntilTheJobOrCapabilitiesChange(t *testing.T) {
	e := newEnv(t)
	ctx, stop := context.WithCancel(e.ctx)
	defer stop()
	subscribed := make(chan struct{}, 1)
	go e.b.Watch(ctx, slog.New(slog.DiscardHandler), func(string) {
		select {
		case subscribed <- struct{}{}:
		default:
		}
	}, nil)
	<-subscribed
	caps := e.caps(slotCaps{})
	memo := broker.NoMatchPrefix + broker.Fingerprint(caps)
	e.apiJob("requeued", map[string]string{"priority": "60", "requirements": `{"hardware":{"gpu_memory_gb":48}}`})
	e.apiJob("resubmitted", req(`{"hardware":{"gpu_memory_gb":48}}`))
	if id := e.claimID(caps); id != "" {
		t.Fatalf("claimed %q", id)
	}
	if !e.rdb.SIsMember(e.ctx, memo, "resubmitted").Val() || !e.rdb.SIsMember(e.ctx, memo, "requeued").Val() {
		t.Fatalf("%s does not remember the non-matches: %v", memo, e.rdb.SMembers(e.ctx, memo).Val())
	}
	if ttl := e.rdb.TTL(e.ctx, memo).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("the memory of non-matches expires in %v, want within a minute", ttl)
	}
	// While a job sits in the queue it is not read again: a change made in place (which the API
	// never makes) is not seen.
	e.rdb.HSet(e.ctx, "job:requeued", "requirements", `{"hardware":{"gpu_memory_gb":8}}`)
	if id := e.claimID(caps); id != "" {
		t.Fatalf("claimed %q: a remembered non-match was read again", id)
	}

	// Re-queued by a worker (here: claimed by a bigger slot, then released): read again.
	bigger := e.caps(slotCaps{id: "m2-worker-simulation-0", mutate: func(c *broker.Capabilities) { c.Hardware.GPUMemoryGB = 80 }})
	j, _, err := e.b.Claim(e.ctx, bigger, 100, 0)
	if err != nil || j == nil || j.ID != "requeued" {
		t.Fatalf("the 80 GB slot claimed %v, %v", j, err)
	}
	if err := e.b.Release(e.ctx, j, "m2-worker-simulation-0"); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return e.claimID(caps) == "requeued" }, "the re-queued job was never read again")

	// Resubmitted through the API with the same id (HSET, ZADD, job_submitted).
	if _, err := e.b.Submit(e.ctx, broker.JobSpec{ID: "resubmitted", Service: "simulation",
		Requirements: json.RawMessage(`{"hardware":{"gpu_memory_gb":8}}`)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return e.claimID(caps) == "resubmitted" }, "the resubmitted job was never read again")

	// New capabilities are a new memory.
	e.apiJob("huge", req(`{"hardware":{"gpu_memory_gb":80}}`))
	if id := e.claimID(caps); id != "" {
		t.Fatalf("claimed %q", id)
	}
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

// eventually waits for a message to arrive and take effect (it never times anything).
func eventually(t *testing.T, done func() bool, failure string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatal(failure)
		}
		time.Sleep(time.Millisecond)
	}
}
