package mock_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/emp-job-queue/machine/core/connectors/mock"
	"github.com/emp-job-queue/machine/core/job"
)

func TestOldPayload(t *testing.T) {
	var pct []float64
	res, err := mock.New().Run(context.Background(), &job.Job{ID: "m1", Payload: json.RawMessage(`{"delay_ms":1,"test_data":{"k":"v"}}`)},
		func(p job.Progress) { pct = append(pct, p.Percent) })
	if err != nil || !res.Success {
		t.Fatal(res, err)
	}
	if len(pct) != 3 || pct[0] != 10 || pct[1] != 80 || pct[2] != 100 {
		t.Errorf("progress = %v, want 10/80/100", pct)
	}
	d := res.Data.(map[string]any)
	if string(d["test_data"].(json.RawMessage)) != `{"k":"v"}` || d["mock_url"] != "mock://m1" {
		t.Errorf("data = %v", d)
	}
	_, err = mock.New().Run(context.Background(), &job.Job{ID: "m2", Payload: json.RawMessage(`{"delay_ms":0,"should_fail":true}`)}, func(job.Progress) {})
	if !errors.Is(err, mock.ErrRequested) || job.IsPermanent(err) {
		t.Errorf("should_fail = %v, want the old retryable failure", err)
	}
}
