package mock_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/emp-job-queue/machine/core/connectors/mock"
	"github.com/emp-job-queue/machine/core/job"
)

func run(t *testing.T, id, payload string) (job.Result, []job.Progress, error) {
	t.Helper()
	var reports []job.Progress
	res, err := mock.New().Run(context.Background(), &job.Job{ID: id, Payload: json.RawMessage(payload)},
		func(p job.Progress) { reports = append(reports, p) })
	return res, reports, err
}

// The old connector's progress (mock-connector.ts): 10/80/100 with its messages and steps, each
// a milestone the slot never spaces out.
func TestOldProgress(t *testing.T) {
	_, reports, err := run(t, "m1", `{"delay_ms":1}`)
	if err != nil {
		t.Fatal(err)
	}
	want := []job.Progress{
		{Percent: 10, Message: "Starting mock processing", StepName: "initializing", Milestone: true},
		{Percent: 80, Message: "Mock processing complete", StepName: "processing", Milestone: true},
		{Percent: 100, Message: "Mock job completed", StepName: "completed", Milestone: true},
	}
	if len(reports) != len(want) {
		t.Fatalf("progress = %+v, want %+v", reports, want)
	}
	for i := range want {
		if reports[i] != want[i] {
			t.Errorf("progress[%d] = %+v, want %+v", i, reports[i], want[i])
		}
	}
}

// The old connector's result fields: test_data (its default message when absent, kept as given
// otherwise, null included), the placeholder mock_url, processing_time_ms.
func TestOldResult(t *testing.T) {
	for _, tc := range []struct{ payload, testData string }{
		{`{"delay_ms":0}`, `"Mock test successful"`},
		{`{}`, `"Mock test successful"`},
		{`{"delay_ms":"2","test_data":{"k":"v"}}`, `{"k":"v"}`},
		{`{"delay_ms":0,"test_data":null}`, `null`},
	} {
		res, _, err := run(t, "step-42", tc.payload)
		if err != nil || !res.Success {
			t.Fatalf("%s: %+v %v", tc.payload, res, err)
		}
		raw, _ := json.Marshal(res)
		var got struct {
			Success bool `json:"success"`
			Data    struct {
				TestData         json.RawMessage `json:"test_data"`
				MockURL          string          `json:"mock_url"`
				ProcessingTimeMS *int64          `json:"processing_time_ms"`
			} `json:"data"`
			ProcessingTimeMS *int64 `json:"processing_time_ms"`
		}
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatal(err)
		}
		if string(got.Data.TestData) != tc.testData || got.Data.MockURL != "https://via.placeholder.com/512x512.png?text=Mock+Test+step-42" ||
			got.Data.ProcessingTimeMS == nil || got.ProcessingTimeMS == nil {
			t.Errorf("%s: result %s", tc.payload, raw)
		}
	}
}

// should_fail is any truthy value; the attempt fails with the old text and is retried.
func TestRequestedFailure(t *testing.T) {
	for _, payload := range []string{`{"delay_ms":0,"should_fail":true}`, `{"delay_ms":0,"should_fail":"yes"}`, `{"delay_ms":0,"should_fail":1}`} {
		res, reports, err := run(t, "m2", payload)
		if err != nil || res.Success || res.Error != "Mock failure requested" || len(reports) != 2 {
			t.Errorf("%s: %+v %v, %d reports; want the old unsuccessful result after 10 and 80", payload, res, err, len(reports))
		}
	}
	for _, payload := range []string{`{"delay_ms":0,"should_fail":false}`, `{"delay_ms":0,"should_fail":0}`, `{"delay_ms":0,"should_fail":""}`} {
		if res, _, err := run(t, "m3", payload); err != nil || !res.Success {
			t.Errorf("%s: %+v %v; want success", payload, res, err)
		}
	}
}

// delay_ms as the old connector read it; nonsense means no delay, never an error.
func TestDelay(t *testing.T) {
	for _, payload := range []string{`{"delay_ms":"abc"}`, `{"delay_ms":null}`, `{"delay_ms":-5}`, `{"delay_ms":[1]}`} {
		if res, _, err := run(t, "m4", payload); err != nil || !res.Success {
			t.Errorf("%s: %+v %v", payload, res, err)
		}
	}
}
