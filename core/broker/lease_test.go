package broker_test

import (
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/broker"
)

func TestLeaseExpiryRequeuesWithoutUsingARetry(t *testing.T) {
	e := newEnv(t)
	e.b.SetPolicy(broker.Policy{Lease: 200 * time.Millisecond})
	const w = "dead-machine-worker-simulation-0"
	e.apiJob("j", map[string]string{"retry_count": "1"})
	score := e.rdb.ZScore(e.ctx, "jobs:pending", "j").Val()
	j, _, err := e.b.Claim(e.ctx, e.caps(slotCaps{id: w}), 100, 0)
	if err != nil || j == nil {
		t.Fatal(j, err)
	}
	if err := e.b.Start(e.ctx, j, w); err != nil {
		t.Fatal(err)
	}
	if e.rdb.ZScore(e.ctx, broker.KeyLeases, "j").Err() != nil {
		t.Fatal("claim took no lease")
	}
	if n, _, _ := e.b.Reap(e.ctx); n != 0 {
		t.Fatal("a live lease was reaped")
	}
	time.Sleep(300 * time.Millisecond) // the machine died: nobody renews
	requeued, failed, err := e.b.Reap(e.ctx)
	if err != nil || requeued != 1 || failed != 0 {
		t.Fatalf("reap = %d, %d, %v", requeued, failed, err)
	}
	h := e.rdb.HGetAll(e.ctx, "job:j").Val()
	if h["status"] != "pending" || h["worker_id"] != "" || h["retry_count"] != "1" || h["lease_expiries"] != "1" || h["last_lost_worker"] != w {
		t.Fatalf("job after reaping: %v", h)
	}
	if got := e.rdb.ZScore(e.ctx, "jobs:pending", "j").Val(); got != score {
		t.Errorf("re-queued at score %v, want its original %v", got, score)
	}
	if e.rdb.HExists(e.ctx, "jobs:active:"+w, "j").Val() || e.rdb.ZCard(e.ctx, broker.KeyLeases).Val() != 0 {
		t.Error("reaping left the dead worker's records")
	}
	// The dead worker's late write cannot take the job back.
	if err := e.b.Complete(e.ctx, j, w, jobResult()); err == nil {
		t.Error("a write from the worker whose lease expired was accepted")
	}
}

func TestRenewKeepsTheLease(t *testing.T) {
	e := newEnv(t)
	e.b.SetPolicy(broker.Policy{Lease: 300 * time.Millisecond})
	const w = "m1-worker-simulation-0"
	e.apiJob("j", nil)
	j, _, _ := e.b.Claim(e.ctx, e.caps(slotCaps{id: w}), 100, 0)
	for range 4 {
		time.Sleep(150 * time.Millisecond)
		if n, err := e.b.RenewLeases(e.ctx, []broker.Held{{JobID: j.ID, WorkerID: w}, {JobID: "gone", WorkerID: w}}); err != nil || n != 1 {
			t.Fatalf("renew = %d, %v", n, err)
		}
		if n, _, _ := e.b.Reap(e.ctx); n != 0 {
			t.Fatal("a renewed lease was reaped")
		}
	}
	if st := e.rdb.HGet(e.ctx, "job:j", "status").Val(); st != "assigned" {
		t.Errorf("status = %s", st)
	}
}

func TestJobThatKillsMachinesFailsAfterMaxExpiries(t *testing.T) {
	e := newEnv(t)
	e.b.SetPolicy(broker.Policy{Lease: 50 * time.Millisecond})
	e.apiJob("poison", nil)
	for i := 1; i <= broker.MaxLeaseExpiries; i++ {
		if id := e.claimID(e.caps(slotCaps{})); id != "poison" {
			t.Fatalf("round %d claimed %q", i, id)
		}
		time.Sleep(80 * time.Millisecond)
		if _, _, err := e.b.Reap(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	if st := e.rdb.HGet(e.ctx, "job:poison", "status").Val(); st != "failed" {
		t.Fatalf("status after %d expiries = %s", broker.MaxLeaseExpiries, st)
	}
	if !e.rdb.HExists(e.ctx, "jobs:failed", "poison").Val() {
		t.Error("not recorded in jobs:failed")
	}
}

func TestRetryBackoffAndAnotherWorkerFirst(t *testing.T) {
	e := newEnv(t)
	e.b.SetPolicy(broker.Policy{RetryBackoff: 2 * time.Second, AvoidLastWorker: 30 * time.Second})
	const a, b = "m1-worker-simulation-0", "m2-worker-simulation-0"
	e.apiJob("j", nil)
	j, _, _ := e.b.Claim(e.ctx, e.caps(slotCaps{id: a}), 100, 0)
	if _, err := e.b.Fail(e.ctx, j, a, "flaky", true); err != nil {
		t.Fatal(err)
	}
	if id := e.claimID(e.caps(slotCaps{id: b})); id != "" {
		t.Fatal("a retry was claimed before its backoff passed")
	}
	e.rdb.HSet(e.ctx, "job:j", "retry_after_unix", time.Now().Add(-time.Second).Unix()) // the backoff passes
	if id := e.claimID(e.caps(slotCaps{id: a})); id != "" {
		t.Fatal("the worker whose attempt failed took the retry while another could")
	}
	if id := e.claimID(e.caps(slotCaps{id: b})); id != "j" {
		t.Fatalf("the other worker claimed %q", id)
	}
}
