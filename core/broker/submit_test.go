package broker_test

import (
	"encoding/json"
	"math"
	"sort"
	"testing"

	"github.com/emp-job-queue/machine/core/broker"
)

func TestSubmitWritesLikeTheAPI(t *testing.T) {
	e := newEnv(t)
	msgs := e.listen("job_submitted", "workflow_submitted")
	one, three, wp := 1, 3, 70
	wd := int64(1759536000000)
	id, err := e.b.Submit(e.ctx, broker.JobSpec{
		Service: "simulation", Priority: 60, Payload: json.RawMessage(`{"steps":3}`),
		Requirements: json.RawMessage(`{"hardware":{"gpu_memory_gb":8}}`), CustomerID: "c1",
		WorkflowID: "wf-1", WorkflowPriority: &wp, WorkflowDatetime: &wd, CurrentStep: &one, TotalSteps: &three,
	})
	if err != nil {
		t.Fatal(err)
	}
	h := e.rdb.HGetAll(e.ctx, "job:"+id).Val()
	ref := e.apiJob("reference", nil) // the API's field set
	var want, got []string
	for k := range ref {
		want = append(want, k)
	}
	for k := range h {
		got = append(got, k)
	}
	sort.Strings(want)
	sort.Strings(got)
	if len(want) != len(got) {
		t.Fatalf("submit wrote fields %v, the API writes %v", got, want)
	}
	for i := range want {
		if want[i] != got[i] {
			t.Fatalf("submit wrote fields %v, the API writes %v", got, want)
		}
	}
	for k, v := range map[string]string{"id": id, "service_required": "simulation", "priority": "60", "payload": `{"steps":3}`,
		"status": "pending", "retry_count": "0", "max_retries": "3", "workflow_priority": "70",
		"workflow_datetime": "1759536000000", "current_step": "1", "total_steps": "3", "ctx": "", "customer_id": "c1"} {
		if h[k] != v {
			t.Errorf("field %s = %q, want %q", k, h[k], v)
		}
	}
	if !isoRe.MatchString(h["created_at"]) {
		t.Errorf("created_at %q is not ISO", h["created_at"])
	}
	score := e.rdb.ZScore(e.ctx, "jobs:pending", id).Val()
	if want := 70*1e15 - math.Floor(float64(wd)/1000); score != want {
		t.Errorf("score %v, want the API formula's %v", score, want)
	}
	got2 := msgs(2)
	s := got2["job_submitted"][0]
	for k, v := range map[string]any{"job_id": id, "service_required": "simulation", "priority": 60.0, "status": "pending",
		"customer_id": "c1", "workflow_id": "wf-1", "current_step": 1.0, "total_steps": 3.0} {
		if s[k] != v {
			t.Errorf("job_submitted.%s = %v, want %v", k, s[k], v)
		}
	}
	if p, _ := s["payload"].(map[string]any); p["steps"] != 3.0 {
		t.Errorf("job_submitted.payload = %v", s["payload"])
	}
	if w := got2["workflow_submitted"][0]; w["workflow_id"] != "wf-1" || w["first_job_id"] != id {
		t.Errorf("workflow_submitted = %v", w)
	}
}

func TestSubmitRejectsBadInput(t *testing.T) {
	e := newEnv(t)
	if _, err := e.b.Submit(e.ctx, broker.JobSpec{}); err == nil {
		t.Error("a job without a service was accepted")
	}
	if _, err := e.b.Submit(e.ctx, broker.JobSpec{Service: "x", Payload: json.RawMessage(`{oops`)}); err == nil {
		t.Error("an invalid JSON payload was accepted")
	}
	if n := e.rdb.DBSize(e.ctx).Val(); n != 0 {
		t.Errorf("rejected submissions left %d keys", n)
	}
}
