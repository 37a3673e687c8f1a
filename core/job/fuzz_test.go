package job_test

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/job"
)

// FuzzFromHash: any hash decodes without a panic, and the score is a number.
func FuzzFromHash(f *testing.F) {
	f.Add("job-1", "simulation", `{"steps":2}`, "3", "50", "", "2026-11-30T11:00:00.000Z")
	f.Add("", "", "{not json", "-1", "x", "1759536000000", "yesterday")
	f.Add("j", "comfyui", "null", "999999999999999999999", "1e308", "NaN", "")
	f.Fuzz(func(t *testing.T, id, service, payload, retries, priority, wfDatetime, created string) {
		j := job.FromHash(map[string]string{"id": id, "service_required": service, "payload": payload,
			"retry_count": retries, "max_retries": retries, "priority": priority, "workflow_datetime": wfDatetime, "created_at": created})
		if j.ID != id || j.Service != service {
			t.Fatalf("decoded %q/%q from %q/%q", j.ID, j.Service, id, service)
		}
		if payload != "" && string(j.Payload) != payload {
			t.Fatal("payload changed while decoding")
		}
		if s := job.Score(j.Fields, time.Unix(1e9, 0)); math.IsNaN(s) || math.IsInf(s, 0) {
			t.Fatalf("score of priority %q, datetime %q is %v: Redis refuses it", priority, wfDatetime, s)
		}
		_ = json.Valid(j.Payload)
	})
}
