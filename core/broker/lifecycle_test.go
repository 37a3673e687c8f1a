package broker_test

import (
	"encoding/json"
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/job"
)

var (
	isoRe      = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)
	secMicroRe = regexp.MustCompile(`^\d{10}\.\d{6}$`)
)

func TestLifecycleMatchesProtocol(t *testing.T) {
	e := newEnv(t)
	const w = "m1-worker-simulation-0"
	orig := e.apiJob("job-1", map[string]string{
		"workflow_id": "wf-9", "current_step": "2", "total_steps": "3", "workflow_priority": "60",
		"workflow_datetime": "1759536000000", "customer_id": "cust-1",
	})
	msgs := e.listen("job_claimed", "update_job_progress", "worker_status", "complete_job")

	// Claim (PROTOCOL §2).
	j, _, err := e.b.Claim(e.ctx, e.caps(slotCaps{id: w}), 10000, 0)
	if err != nil || j == nil {
		t.Fatalf("claim = %v, %v; want the job", j, err)
	}
	if j.ID != "job-1" || j.Service != "simulation" || string(j.Payload) != `{"steps":2}` || j.MaxRetries != 3 {
		t.Fatalf("claimed job decoded wrong: %+v", j)
	}
	if n := e.rdb.ZCard(e.ctx, "jobs:pending").Val(); n != 0 {
		t.Fatalf("jobs:pending still holds %d ids after the claim", n)
	}
	h := e.rdb.HGetAll(e.ctx, "job:job-1").Val()
	if h["status"] != "assigned" || h["worker_id"] != w || !secMicroRe.MatchString(h["assigned_at"]) {
		t.Fatalf("job hash after claim: status=%q worker_id=%q assigned_at=%q", h["status"], h["worker_id"], h["assigned_at"])
	}
	var active map[string]string
	if err := json.Unmarshal([]byte(e.rdb.HGet(e.ctx, "jobs:active:"+w, "job-1").Val()), &active); err != nil {
		t.Fatalf("jobs:active entry is not the job's JSON: %v", err)
	}
	for k, v := range orig { // the pre-claim snapshot, as the API's function stores it
		if active[k] != v {
			t.Errorf("jobs:active snapshot %s = %q, want %q", k, active[k], v)
		}
	}
	wh := e.rdb.HGetAll(e.ctx, "worker:"+w).Val()
	if wh["status"] != "busy" || wh["current_job_id"] != "job-1" || wh["last_status_change"] == "" {
		t.Fatalf("worker hash after claim: %v", wh)
	}
	got := msgs(3)
	claimed := got["job_claimed"][0]
	want := map[string]any{"job_id": "job-1", "worker_id": w, "status": "claimed", "message": "Job claimed by worker",
		"service_required": "simulation", "customer_id": "cust-1", "workflow_id": "wf-9", "total_steps": "3"}
	for k, v := range want {
		if claimed[k] != v {
			t.Errorf("job_claimed.%s = %v, want %v", k, claimed[k], v)
		}
	}
	if _, ok := claimed["timestamp"].(float64); !ok || !secMicroRe.MatchString(claimed["claimed_at"].(string)) {
		t.Errorf("job_claimed timestamps wrong: %v", claimed)
	}
	p0 := got["update_job_progress"][0]
	if p0["job_id"] != "job-1" || p0["worker_id"] != w || p0["progress"] != 0.0 || p0["timestamp"] == nil {
		t.Errorf("claim progress message = %v", p0)
	}
	if ws := got["worker_status"][0]; ws["new_status"] != "busy" || ws["current_job_id"] != "job-1" || ws["old_status"] != "idle" {
		t.Errorf("worker_status on claim = %v", ws)
	}

	// Start.
	if err := e.b.Start(e.ctx, j, w); err != nil {
		t.Fatal(err)
	}
	h = e.rdb.HGetAll(e.ctx, "job:job-1").Val()
	if h["status"] != "in_progress" || !isoRe.MatchString(h["started_at"]) {
		t.Fatalf("after start: status=%q started_at=%q", h["status"], h["started_at"])
	}

	// Progress.
	if err := e.b.Progress(e.ctx, j, w, job.Progress{Percent: 42, Message: "step 1/2", Step: 1, TotalSteps: 2}); err != nil {
		t.Fatal(err)
	}
	ph := e.rdb.HGetAll(e.ctx, "job:job-1:progress").Val()
	if ph["progress"] != "42" || ph["status"] != "in_progress" || ph["message"] != "step 1/2" || !isoRe.MatchString(ph["updated_at"]) {
		t.Fatalf("progress hash = %v", ph)
	}
	got = msgs(4)
	p := got["update_job_progress"][1]
	for k, v := range map[string]any{"job_id": "job-1", "worker_id": w, "progress": 42.0, "status": "in_progress",
		"message": "step 1/2", "current_step": 1.0, "total_steps": 2.0} {
		if p[k] != v {
			t.Errorf("update_job_progress.%s = %v, want %v", k, p[k], v)
		}
	}

	// Complete.
	res := job.Result{Success: true, Data: map[string]any{"answer": 42}, ProcessingTimeMS: 7}
	if err := e.b.Complete(e.ctx, j, w, res); err != nil {
		t.Fatal(err)
	}
	h = e.rdb.HGetAll(e.ctx, "job:job-1").Val()
	if h["status"] != "completed" || !isoRe.MatchString(h["completed_at"]) {
		t.Fatalf("after complete: %v", h)
	}
	if e.rdb.HExists(e.ctx, "jobs:active:"+w, "job-1").Val() {
		t.Error("job still in jobs:active after completion")
	}
	var stored struct {
		Success     bool       `json:"success"`
		Data        job.Result `json:"data"`
		CompletedAt string     `json:"completed_at"`
	}
	if err := json.Unmarshal([]byte(e.rdb.HGet(e.ctx, "jobs:completed", "job-1").Val()), &stored); err != nil {
		t.Fatal(err)
	}
	if !stored.Success || !stored.Data.Success || stored.Data.ProcessingTimeMS != 7 || !isoRe.MatchString(stored.CompletedAt) {
		t.Errorf("jobs:completed entry = %+v", stored)
	}
	if ttl := e.rdb.TTL(e.ctx, "jobs:completed").Val(); ttl <= 0 || ttl > 86400*time.Second {
		t.Errorf("jobs:completed TTL = %v, want up to 86400 s", ttl)
	}
	wh = e.rdb.HGetAll(e.ctx, "worker:"+w).Val()
	if wh["status"] != "idle" || wh["current_job_id"] != "" {
		t.Errorf("worker after completion: %v", wh)
	}
	got = msgs(6)
	c := got["complete_job"][0]
	for k, v := range map[string]any{"job_id": "job-1", "worker_id": w, "progress": 100.0, "status": "completed",
		"message": "Job completed successfully", "workflow_id": "wf-9", "current_step": 2.0, "total_steps": 3.0,
		"workflow_priority": 60.0, "workflow_datetime": 1759536000000.0} {
		if c[k] != v {
			t.Errorf("complete_job.%s = %v, want %v", k, c[k], v)
		}
	}
	if r, _ := c["result"].(map[string]any); r["success"] != true {
		t.Errorf("complete_job.result = %v", c["result"])
	}
	if ws := got["worker_status"][1]; ws["old_status"] != "busy" || ws["new_status"] != "idle" || ws["worker_id"] != w {
		t.Errorf("worker_status on completion = %v", ws)
	}
}

func TestWritesAfterCancelDoNotResurrect(t *testing.T) {
	e := newEnv(t)
	const w = "m1-worker-simulation-0"
	e.apiJob("job-c", nil)
	j, _, _ := e.b.Claim(e.ctx, e.caps(slotCaps{id: w}), 100, 0)
	if err := e.b.Start(e.ctx, j, w); err != nil {
		t.Fatal(err)
	}
	// The API's cancel (emp-reference §1.6).
	e.rdb.HSet(e.ctx, "job:job-c", "status", "failed", "error", "Job cancelled by user")
	e.rdb.HDel(e.ctx, "jobs:active:"+w, "job-c")

	if err := e.b.Progress(e.ctx, j, w, job.Progress{Percent: 50}); !errors.Is(err, broker.ErrNotOwner) {
		t.Errorf("progress after cancel: %v, want ErrNotOwner", err)
	}
	if err := e.b.Complete(e.ctx, j, w, job.Result{Success: true}); !errors.Is(err, broker.ErrNotOwner) {
		t.Errorf("complete after cancel: %v, want ErrNotOwner", err)
	}
	if _, err := e.b.Fail(e.ctx, j, w, "boom", true); !errors.Is(err, broker.ErrNotOwner) {
		t.Errorf("fail after cancel: %v, want ErrNotOwner", err)
	}
	if st := e.rdb.HGet(e.ctx, "job:job-c", "status").Val(); st != "failed" {
		t.Errorf("cancelled job status became %q", st)
	}
	if e.rdb.HExists(e.ctx, "jobs:completed", "job-c").Val() || e.rdb.ZCard(e.ctx, "jobs:pending").Val() != 0 {
		t.Error("a cancelled job was completed or re-queued")
	}
	if st := e.rdb.HGet(e.ctx, "worker:"+w, "status").Val(); st != "idle" {
		t.Errorf("worker left %q after its job was cancelled", st)
	}
}

func TestRetriesThenPermanentFailure(t *testing.T) {
	e := newEnv(t)
	const w = "m1-worker-simulation-0"
	e.apiJob("job-r", map[string]string{"max_retries": "3"})
	msgs := e.listen("job_failed", "job_requeued")
	caps := e.caps(slotCaps{id: w})
	for attempt := 1; attempt <= 3; attempt++ {
		j, _, err := e.b.Claim(e.ctx, caps, 100, 0)
		if err != nil || j == nil {
			t.Fatalf("attempt %d: claim = %v, %v", attempt, j, err)
		}
		if j.RetryCount != attempt-1 {
			t.Fatalf("attempt %d: retry_count = %d", attempt, j.RetryCount)
		}
		if err := e.b.Start(e.ctx, j, w); err != nil {
			t.Fatal(err)
		}
		out, err := e.b.Fail(e.ctx, j, w, "connector exploded", true)
		if err != nil {
			t.Fatal(err)
		}
		h := e.rdb.HGetAll(e.ctx, "job:job-r").Val()
		if attempt < 3 {
			if out != broker.Retried || h["status"] != "pending" || h["worker_id"] != "" || h["assigned_at"] != "" ||
				h["last_failed_worker"] != w || !isoRe.MatchString(h["failed_at"]) {
				t.Fatalf("attempt %d: outcome %v, hash %v", attempt, out, h)
			}
			if e.rdb.ZScore(e.ctx, "jobs:pending", "job-r").Err() != nil {
				t.Fatalf("attempt %d: retried job is not back in jobs:pending", attempt)
			}
			continue
		}
		if out != broker.Failed || h["status"] != "failed" || h["retry_count"] != "3" {
			t.Fatalf("last attempt: outcome %v, hash %v", out, h)
		}
	}
	if e.rdb.ZCard(e.ctx, "jobs:pending").Val() != 0 {
		t.Error("permanently failed job is still pending")
	}
	var failed map[string]any
	if err := json.Unmarshal([]byte(e.rdb.HGet(e.ctx, "jobs:failed", "job-r").Val()), &failed); err != nil {
		t.Fatal(err)
	}
	if failed["error"] != "connector exploded" || failed["retry_count"] != 3.0 || !isoRe.MatchString(failed["failed_at"].(string)) {
		t.Errorf("jobs:failed entry = %v", failed)
	}
	if ttl := e.rdb.TTL(e.ctx, "jobs:failed").Val(); ttl <= 0 || ttl > 604800*time.Second {
		t.Errorf("jobs:failed TTL = %v", ttl)
	}
	got := msgs(3)
	if len(got["job_requeued"]) != 2 || len(got["job_failed"]) != 1 {
		t.Fatalf("messages: %v", got)
	}
	f := got["job_failed"][0]
	for k, v := range map[string]any{"job_id": "job-r", "worker_id": w, "status": "failed", "error": "connector exploded",
		"retry_count": 3.0, "can_retry": false} {
		if f[k] != v {
			t.Errorf("job_failed.%s = %v, want %v", k, f[k], v)
		}
	}
}

func TestNonRetryableFailsAtOnce(t *testing.T) {
	e := newEnv(t)
	const w = "m1-worker-simulation-0"
	e.apiJob("job-p", nil)
	j, _, _ := e.b.Claim(e.ctx, e.caps(slotCaps{id: w}), 100, 0)
	out, err := e.b.Fail(e.ctx, j, w, "payload is not valid JSON", false)
	if err != nil || out != broker.Failed {
		t.Fatalf("fail = %v, %v", out, err)
	}
	if st := e.rdb.HGet(e.ctx, "job:job-p", "status").Val(); st != "failed" {
		t.Errorf("status = %q", st)
	}
}

func TestReleaseKeepsRetryBudgetAndPlace(t *testing.T) {
	e := newEnv(t)
	const w = "m1-worker-simulation-0"
	e.apiJob("old", nil)
	j, _, _ := e.b.Claim(e.ctx, e.caps(slotCaps{id: w}), 100, 0)
	_ = e.b.Start(e.ctx, j, w)
	e.apiJob("newer", map[string]string{"created_at": time.Now().UTC().Format("2006-01-02T15:04:05.000Z")})
	if err := e.b.Release(e.ctx, j, w); err != nil {
		t.Fatal(err)
	}
	h := e.rdb.HGetAll(e.ctx, "job:old").Val()
	if h["status"] != "pending" || h["retry_count"] != "0" || h["worker_id"] != "" {
		t.Fatalf("released job: %v", h)
	}
	if id := e.claimID(e.caps(slotCaps{id: w})); id != "old" {
		t.Errorf("after release the first claim took %q, want the older job back at its place", id)
	}
}
