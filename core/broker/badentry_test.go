package broker_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
)

// A pending entry the claim cannot read is taken out of jobs:pending and recorded in
// jobs:quarantine; a job hash among them fails closed, as the API fails a job; the good job
// behind it is claimed by the same call, and claims go on.
func TestBadEntriesNeverStopClaiming(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000)
	cases := []struct {
		name  string
		write func(e *env) // writes the bad entry "bad", ahead of the good job
		isJob bool         // job:bad is a hash that fails closed
		says  string       // in the reason
	}{
		{"job key is not a hash", func(e *env) { e.rdb.Set(e.ctx, "job:bad", "x", 0) }, false, "not a job hash"},
		{"job key is a list", func(e *env) { e.rdb.RPush(e.ctx, "job:bad", "x") }, false, "is a list"},
		{"hash without id", func(e *env) {
			e.apiJob("bad", map[string]string{"priority": "90"})
			e.rdb.HDel(e.ctx, "job:bad", "id")
		}, true, "no id field"},
		{"hash naming another id", func(e *env) { e.apiJob("bad", map[string]string{"priority": "90", "id": "someone-else"}) }, true, "another id"},
		{"array requirements", func(e *env) {
			e.apiJob("bad", map[string]string{"priority": "90", "requirements": `[{"hardware":{"gpu_memory_gb":1}}]`})
		}, true, "JSON array"},
		{"string requirements", func(e *env) { e.apiJob("bad", map[string]string{"priority": "90", "requirements": `"gpu"`}) }, true, "JSON string"},
		{"malformed requirements", func(e *env) { e.apiJob("bad", map[string]string{"priority": "90", "requirements": `{not json`}) }, true, "not valid JSON"},
		{"5,000-deep requirements", func(e *env) { e.apiJob("bad", map[string]string{"priority": "90", "requirements": deep}) }, true, "requirements"},
		{"requirements over 64 KiB", func(e *env) {
			e.apiJob("bad", map[string]string{"priority": "90", "requirements": `{"x":"` + strings.Repeat("a", 70000) + `"}`})
		}, true, "bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			failed := e.listen("job_failed")
			tc.write(e)
			e.rdb.ZAdd(e.ctx, "jobs:pending", redis.Z{Score: 9e16, Member: "bad"}) // first in line
			e.apiJob("good", nil)
			e.apiJob("comfy", map[string]string{"service_required": "comfyui"})

			if id := e.claimID(e.caps(slotCaps{})); id != "good" {
				t.Fatalf("claimed %q, want the good job behind the bad entry", id)
			}
			if e.rdb.ZScore(e.ctx, "jobs:pending", "bad").Err() != redis.Nil {
				t.Fatal("the bad entry is still in jobs:pending")
			}
			var q struct {
				Reason    string `json:"reason"`
				At        string `json:"quarantined_at"`
				JobFailed bool   `json:"job_failed"`
			}
			if err := json.Unmarshal([]byte(e.rdb.HGet(e.ctx, broker.KeyQuarantine, "bad").Val()), &q); err != nil {
				t.Fatalf("jobs:quarantine has no readable entry for the bad id: %v", err)
			}
			if !strings.Contains(q.Reason, tc.says) || !isoRe.MatchString(q.At) || q.JobFailed != tc.isJob {
				t.Fatalf("quarantine entry %+v, want a reason saying %q", q, tc.says)
			}
			if tc.isJob {
				h := e.rdb.HGetAll(e.ctx, "job:bad").Val()
				if h["status"] != "failed" || h["error"] != q.Reason || !isoRe.MatchString(h["failed_at"]) {
					t.Fatalf("job hash after failing closed: status %q, error %q", h["status"], h["error"])
				}
				if !strings.Contains(h["error"], "submit") {
					t.Errorf("the error %q does not say what to do", h["error"])
				}
				if !e.rdb.HExists(e.ctx, "jobs:failed", "bad").Val() {
					t.Error("jobs:failed lacks the job")
				}
				msg := failed(1)["job_failed"][0]
				if msg["job_id"] != "bad" || msg["status"] != "failed" || msg["can_retry"] != false || msg["error"] != q.Reason {
					t.Errorf("job_failed = %v", msg)
				}
			} else if e.rdb.Exists(e.ctx, "job:bad").Val() != 1 {
				t.Error("a key the claim does not own was deleted")
			}
			// Other services and later claims are not stopped either.
			if id := e.claimID(e.caps(slotCaps{id: "m2-worker-comfyui-0", services: []string{"comfyui"}})); id != "comfy" {
				t.Fatalf("a comfyui slot claimed %q", id)
			}
			if id := e.claimID(e.caps(slotCaps{})); id != "" {
				t.Fatalf("claimed %q from an empty queue", id)
			}
		})
	}
}

// Errors raised inside Redis by the claim are their own class, apart from a broker that does
// not answer.
func TestScriptErrorsAreTheirOwnClass(t *testing.T) {
	e := newEnv(t)
	e.rdb.Set(e.ctx, "jobs:pending", "not a sorted set", 0)
	_, _, err := e.b.Claim(e.ctx, e.caps(slotCaps{}), 100, 0)
	if !errors.Is(err, broker.ErrScript) {
		t.Fatalf("claim over a broken jobs:pending = %v, want ErrScript", err)
	}

	gone := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer gone.Close()
	_, _, err = broker.New(gone).Claim(e.ctx, e.caps(slotCaps{}), 100, 0)
	if err == nil || errors.Is(err, broker.ErrScript) {
		t.Fatalf("claim against no broker = %v, want a connection error that is not ErrScript", err)
	}
}
