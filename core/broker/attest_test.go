package broker_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/job"
)

// keysInOrder lists a JSON object's member names as written.
func keysInOrder(t testing.TB, raw string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %s", raw)
	}
	var keys []string
	for dec.More() {
		k, _ := dec.Token()
		keys = append(keys, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// The fields of emp's records, in emp's order (redis-direct-worker-client.ts).
var (
	completionFields = []string{"job_id", "worker_id", "status", "completed_at", "result", "raw_service_output",
		"raw_service_request", "retry_count", "workflow_id", "current_step", "total_steps", "machine_id",
		"worker_version", "attestation_created_at"}
	failureFields = []string{"attestation_type", "job_id", "worker_id", "status", "failed_at", "error_message",
		"failure_type", "failure_reason", "failure_description", "raw_service_output", "raw_service_request",
		"retry_count", "will_retry", "max_retries", "workflow_id", "current_step", "total_steps", "workflow_impact",
		"machine_id", "worker_version", "attestation_created_at"}
)

// attestation reads a key the way the API's GET /api/attestations does (GET, JSON.parse) and
// checks that, like emp's, it never expires.
func (e *env) attestation(key string, fields []string) map[string]any {
	e.t.Helper()
	raw, err := e.rdb.Get(e.ctx, key).Result()
	if err != nil {
		keys, _ := e.rdb.Keys(e.ctx, "*:failure:*").Result()
		more, _ := e.rdb.Keys(e.ctx, "worker:completion:*").Result()
		e.t.Fatalf("attestation %s: %v (attestations present: %v)", key, err, append(keys, more...))
	}
	if ttl := e.rdb.TTL(e.ctx, key).Val(); ttl >= 0 {
		e.t.Errorf("%s expires in %v; emp's attestations have no TTL", key, ttl)
	}
	if got := keysInOrder(e.t, raw); !slices.Equal(got, fields) {
		e.t.Errorf("%s fields = %v\nwant emp's %v", key, got, fields)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		e.t.Fatal(err)
	}
	return m
}

func TestCompletionAttestation(t *testing.T) {
	e := newEnv(t)
	e.b.SetIdentity("m1", "v1.2.3")
	const w = "m1-worker-simulation-0"
	e.apiJob("step-abc", map[string]string{"workflow_id": "wf-9", "current_step": "2", "total_steps": "3", "retry_count": "1",
		"ctx": `{"workflow_context":{"retry_attempt":2}}`})
	j, _, _ := e.b.Claim(e.ctx, e.caps(slotCaps{id: w}), 100, 0)
	if err := e.b.Start(e.ctx, j, w); err != nil {
		t.Fatal(err)
	}
	image := strings.Repeat("iVBORw0KGgo", 20)
	res := job.Result{Success: true, Data: map[string]any{"image_url": "https://cdn/x.png", "image_base64": image,
		"raw_output": "data:image/png;base64," + image, "nested": `{"b64":"` + image + `","keep":"<short>"}`}}
	if err := e.b.Complete(e.ctx, j, w, res); err != nil {
		t.Fatal(err)
	}
	// Key: the workflow, the job id without "step-", attempt = ctx's retry_attempt + 1.
	a := e.attestation("worker:completion:job-id:wf-9:step-id:abc:attempt:3", completionFields)
	for k, v := range map[string]any{"job_id": "step-abc", "worker_id": w, "status": "completed", "retry_count": 2.0,
		"workflow_id": "wf-9", "current_step": "2", "total_steps": "3", "machine_id": "m1", "worker_version": "v1.2.3",
		"raw_service_request": nil} {
		if a[k] != v {
			t.Errorf("attestation %s = %v, want %v", k, a[k], v)
		}
	}
	if a["result"] != a["raw_service_output"] {
		t.Errorf("result and raw_service_output differ: %v / %v", a["result"], a["raw_service_output"])
	}
	result := a["result"].(string)
	if strings.Contains(result, image) || !strings.Contains(result, `"image_base64":"[BASE64_IMAGE_REMOVED]"`) ||
		!strings.Contains(result, `[BASE64_DATA_REMOVED]`) || !strings.Contains(result, "https://cdn/x.png") || !strings.Contains(result, "<short>") {
		t.Errorf("result not sanitized as emp does it: %s", result)
	}
	if !isoRe.MatchString(a["completed_at"].(string)) || a["attestation_created_at"].(float64) <= 0 {
		t.Errorf("times: %v %v", a["completed_at"], a["attestation_created_at"])
	}
	// jobs:completed keeps the whole result: only the attestation is scrubbed.
	if !strings.Contains(e.rdb.HGet(e.ctx, "jobs:completed", "step-abc").Val(), image) {
		t.Error("jobs:completed lost the result's data")
	}
}

func TestCompletionAttestationWithoutWorkflow(t *testing.T) {
	e := newEnv(t)
	const w = "m1-worker-simulation-0"
	e.apiJob("job-7", nil)
	j, _, _ := e.b.Claim(e.ctx, e.caps(slotCaps{id: w}), 100, 0)
	if err := e.b.Complete(e.ctx, j, w, job.Result{Success: true}); err != nil {
		t.Fatal(err)
	}
	a := e.attestation("worker:completion:step-id:job-7:attempt:1", completionFields)
	for k, v := range map[string]any{"workflow_id": nil, "current_step": nil, "total_steps": nil, "retry_count": 0.0,
		"machine_id": "unknown", "worker_version": "unknown"} {
		if a[k] != v {
			t.Errorf("attestation %s = %v, want %v", k, a[k], v)
		}
	}
}

// A retried attempt gets worker:failure:…:attempt:{n} (and workflow:failure:…); the last one
// worker:failure:…:permanent, the old completion key and workflow:failure:…:permanent.
func TestFailureAttestations(t *testing.T) {
	e := newEnv(t)
	e.b.SetIdentity("m1", "v1")
	const w = "m1-worker-simulation-0"
	e.apiJob("step-f", map[string]string{"max_retries": "2", "workflow_id": "wf-2", "current_step": "1", "total_steps": "1"})
	caps := e.caps(slotCaps{id: w})
	reasons := []string{"connection reset by upstream", "CUDA out of memory on GPU 0"}
	for attempt := 1; attempt <= 2; attempt++ {
		j, _, _ := e.b.Claim(e.ctx, caps, 100, 0)
		if j == nil {
			t.Fatalf("attempt %d not claimed", attempt)
		}
		if _, err := e.b.Fail(e.ctx, j, w, reasons[attempt-1], true); err != nil {
			t.Fatal(err)
		}
	}
	retry := e.attestation("worker:failure:job-id:wf-2:step-id:f:attempt:1", failureFields)
	for k, v := range map[string]any{"attestation_type": "failure_retry", "status": "failed_retrying", "will_retry": true,
		"retry_count": 1.0, "max_retries": 2.0, "error_message": reasons[0], "failure_type": "network_error",
		"failure_reason": "connection_failed", "workflow_impact": "workflow_interrupted", "machine_id": "m1"} {
		if retry[k] != v {
			t.Errorf("retry attestation %s = %v, want %v", k, retry[k], v)
		}
	}
	wfFields := append(slices.Clone(failureFields), "workflow_attestation_type", "failed_job_id", "workflow_status")
	wf := e.attestation("workflow:failure:wf-2:attempt:1", wfFields)
	if wf["workflow_attestation_type"] != "job_failure" || wf["failed_job_id"] != "step-f" || wf["workflow_status"] != "failed_retrying" {
		t.Errorf("workflow attestation = %v", wf)
	}
	perm := e.attestation("worker:failure:job-id:wf-2:step-id:f:permanent", failureFields)
	for k, v := range map[string]any{"attestation_type": "failure_permanent", "status": "failed_permanent", "will_retry": false,
		"retry_count": 2.0, "failure_type": "resource_limit", "failure_reason": "gpu_memory_full", "workflow_impact": "workflow_terminated"} {
		if perm[k] != v {
			t.Errorf("permanent attestation %s = %v, want %v", k, perm[k], v)
		}
	}
	old := e.attestation("worker:completion:job-id:wf-2:step-id:f", failureFields)
	if old["status"] != "failed_permanent" {
		t.Errorf("old completion key holds %v", old)
	}
	e.attestation("workflow:failure:wf-2:permanent", wfFields)
}

// No workflow: no workflow keys, workflow_impact null, and the old completion key without one.
func TestPermanentFailureWithoutWorkflow(t *testing.T) {
	e := newEnv(t)
	const w = "m1-worker-simulation-0"
	e.apiJob("job-p", nil)
	j, _, _ := e.b.Claim(e.ctx, e.caps(slotCaps{id: w}), 100, 0)
	if _, err := e.b.Fail(e.ctx, j, w, "payload is invalid", false); err != nil {
		t.Fatal(err)
	}
	a := e.attestation("worker:failure:step-id:job-p:permanent", failureFields)
	if a["workflow_impact"] != nil || a["failure_type"] != "validation_error" || a["machine_id"] != "unknown" {
		t.Errorf("attestation = %v", a)
	}
	e.attestation("worker:completion:step-id:job-p", failureFields)
	if keys := e.rdb.Keys(e.ctx, "workflow:*").Val(); len(keys) != 0 {
		t.Errorf("workflow keys without a workflow: %v", keys)
	}
}

// The attestation is part of the transition: a write that is no longer the worker's (the API
// cancelled the job) attests nothing.
func TestNoAttestationForAJobNoLongerHeld(t *testing.T) {
	e := newEnv(t)
	const w = "m1-worker-simulation-0"
	e.apiJob("job-x", nil)
	j, _, _ := e.b.Claim(e.ctx, e.caps(slotCaps{id: w}), 100, 0)
	e.rdb.HSet(e.ctx, "job:job-x", "status", "failed", "error", "Job cancelled by user")
	_ = e.b.Complete(e.ctx, j, w, job.Result{Success: true})
	_, _ = e.b.Fail(e.ctx, j, w, "boom", false)
	if keys := e.rdb.Keys(e.ctx, "worker:*:*step-id*").Val(); len(keys) != 0 {
		t.Errorf("attestations for a job not held: %v", keys)
	}
}

// Cases of emp's FailureClassifier, one per branch family, with the answers its code gives.
func TestClassifyFailureLikeEmp(t *testing.T) {
	for msg, want := range map[string][2]string{
		"Your request was rejected by the safety system. wfr_abc123": {"generation_refusal", "safety_filter"},
		"refused: violent content":                                   {"generation_refusal", "violence_detected"},
		"blocked: adult imagery":                                     {"generation_refusal", "nsfw_content"},
		"401 Unauthorized: invalid key":                              {"auth_error", "invalid_api_key"},
		"token expired":                                              {"auth_error", "expired_token"},
		"Rate limit reached: too many requests":                      {"rate_limit", "requests_per_minute"},
		"daily quota exceeded":                                       {"rate_limit", "daily_quota_exceeded"},
		"getaddrinfo ENOTFOUND api.example.com":                      {"network_error", "dns_resolution"},
		"job j ran longer than the 30m0s job timeout":                {"network_error", "network_timeout"},
		"disk space exhausted":                                       {"resource_limit", "disk_space_full"},
		"ComfyUI service unavailable":                                {"service_error", "service_unavailable"},
		"request timed out while processing":                         {"timeout", "processing_timeout"},
		`Error in component "KSampler"`:                              {"validation_error", "component_error"},
		"model sdxl does not exist":                                  {"validation_error", "model_not_found"},
		"unexpected content type text/html":                          {"response_error", "unexpected_content_type"},
		"internal crash in worker":                                   {"system_error", "internal_error"},
		"something odd":                                              {"system_error", "unknown_error"},
	} {
		got := broker.ClassifyFailure(msg)
		if got.Type != want[0] || got.Reason != want[1] || got.Description == "" {
			t.Errorf("%q → %+v, want %s/%s", msg, got, want[0], want[1])
		}
	}
	if d := broker.ClassifyFailure("moderation_blocked wfr_XYZ9").Description; d != "Content refused by safety system (request ID: wfr_xyz9)" {
		t.Errorf("safety description = %q", d)
	}
	if d := broker.ClassifyFailure(`error in component 'Loader'`).Description; d != "Error in component loader" {
		t.Errorf("component description = %q", d)
	}
}

// Strings that hold JSON are sanitized inside and written back compactly; everything keeps
// its order; strings directly in arrays are left as emp leaves them.
func TestSanitizeKeepsOrderAndShape(t *testing.T) {
	e := newEnv(t)
	const w = "m1-worker-simulation-0"
	e.apiJob("job-s", nil)
	j, _, _ := e.b.Claim(e.ctx, e.caps(slotCaps{id: w}), 100, 0)
	long := strings.Repeat("A", 120)
	res := job.Result{Success: true, Data: map[string]any{"z": "first", "list": []any{long}, "meta": "{ \"x\" : 1 }"}}
	if err := e.b.Complete(e.ctx, j, w, res); err != nil {
		t.Fatal(err)
	}
	a := e.attestation("worker:completion:step-id:job-s:attempt:1", completionFields)
	var data struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(a["result"].(string)), &data); err != nil {
		t.Fatal(err)
	}
	want := `{"list":["` + long + `"],"meta":"{\"x\":1}","z":"first"}`
	if !bytes.Equal(data.Data, []byte(want)) {
		t.Errorf("sanitized data = %s\nwant %s", data.Data, want)
	}
}
