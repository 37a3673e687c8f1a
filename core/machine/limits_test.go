package machine_test

import (
	"context"
	"strings"
	"testing"
)

// A job larger than MACHINE_MAX_JOB_MB fails for good with a sentence saying why, without being
// decoded; the next job runs.
func TestOversizeJobsFailClearly(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "mock", "MACHINE_MAX_JOB_MB": "1"})
	big := h.submit("mock", `{"delay_ms":1,"test_data":"`+strings.Repeat("x", 2<<20)+`"}`)
	h.waitFor("the oversize job to fail", func() bool { return h.status(big) == "failed" })
	jh := h.rdb.HGetAll(context.Background(), "job:"+big).Val()
	if !strings.Contains(jh["error"], "MACHINE_MAX_JOB_MB") || h.rdb.ZScore(context.Background(), "jobs:pending", big).Err() == nil {
		t.Errorf("oversize job: status %s, error %q", jh["status"], jh["error"])
	}
	small := h.submit("mock", `{"delay_ms":1}`)
	h.waitFor("the next job to complete", func() bool { return h.status(small) == "completed" })
}
