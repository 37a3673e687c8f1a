// Package mock is the old runtime's mock connector (apps/worker/src/connectors/mock-connector.ts,
// emp-reference §8): payload {delay_ms, should_fail, test_data}, progress 10/80/100 with the
// same messages and steps, the same result, and a retryable failure on request.
package mock

import (
	"context"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/job"
)

// Payload is the old mock payload. Its fields are read as the old connector read them, with
// JavaScript's rules: delay_ms may be a number or a numeric string, should_fail any truthy value.
type Payload struct {
	DelayMS    json.RawMessage `json:"delay_ms"`
	ShouldFail json.RawMessage `json:"should_fail"`
	TestData   json.RawMessage `json:"test_data"`
}

// DefaultDelay is the old connector's default delay_ms.
const DefaultDelay = 100 * time.Millisecond

// DefaultTestData is the old connector's test_data when the payload has none.
const DefaultTestData = "Mock test successful"

// FailureText is the old connector's error for should_fail.
const FailureText = "Mock failure requested"

// URLPrefix starts the old connector's mock_url; the job id follows.
const URLPrefix = "https://via.placeholder.com/512x512.png?text=Mock+Test+"

// Connector runs mock jobs.
type Connector struct{}

// New returns a mock connector.
func New() *Connector { return &Connector{} }

// Run implements connectors.Connector.
func (Connector) Run(ctx context.Context, j *job.Job, progress job.ProgressFunc) (job.Result, error) {
	start := time.Now()
	var p Payload
	if err := connectors.DecodePayload(j, &p); err != nil {
		return job.Result{}, err
	}
	progress(job.Progress{Percent: 10, Message: "Starting mock processing", StepName: "initializing", Milestone: true})
	if err := connectors.Sleep(ctx, delay(p.DelayMS)); err != nil {
		return job.Result{}, err
	}
	progress(job.Progress{Percent: 80, Message: "Mock processing complete", StepName: "processing", Milestone: true})
	if truthy(p.ShouldFail) {
		// A result, not an error, as the old connector returns it: the attempt fails and is retried.
		return job.Result{Success: false, Error: FailureText, ProcessingTimeMS: time.Since(start).Milliseconds()}, nil
	}
	progress(job.Progress{Percent: 100, Message: "Mock job completed", StepName: "completed", Milestone: true})
	testData := p.TestData
	if len(testData) == 0 { // absent; an explicit null stays null, as JavaScript's default does
		testData, _ = json.Marshal(DefaultTestData)
	}
	elapsed := time.Since(start).Milliseconds()
	return job.Result{
		Success: true,
		Data: map[string]any{
			"test_data": testData, "mock_url": URLPrefix + j.ID, "processing_time_ms": elapsed,
		},
		ProcessingTimeMS: elapsed,
	}, nil
}

// delay reads delay_ms as the old connector did: a number, else parseInt of its text, else 0;
// absent means the default.
func delay(raw json.RawMessage) time.Duration {
	if len(raw) == 0 {
		return DefaultDelay
	}
	var ms float64
	if err := json.Unmarshal(raw, &ms); err != nil {
		var text string
		if json.Unmarshal(raw, &text) != nil {
			return 0
		}
		ms = parseInt(text)
	}
	if math.IsNaN(ms) || ms <= 0 {
		return 0
	}
	return time.Duration(min(ms, math.MaxInt32) * float64(time.Millisecond)) // setTimeout's limit; the job timeout ends it sooner

}

// parseInt is JavaScript's parseInt on a string: leading blanks, a sign, then digits; 0 when
// there are none (NaN, which the old connector turned into 0).
func parseInt(s string) float64 {
	s = strings.TrimLeft(s, " \t\n\r")
	end := 0
	if end < len(s) && (s[end] == '-' || s[end] == '+') {
		end++
	}
	digits := end
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		end++
	}
	if end == digits {
		return 0
	}
	n, _ := strconv.ParseFloat(s[:end], 64)
	return n
}

// truthy is JavaScript's truthiness of a JSON value.
func truthy(raw json.RawMessage) bool {
	switch v := strings.TrimSpace(string(raw)); v {
	case "", "null", "false", `""`, "0", "-0":
		return false
	default:
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return f != 0
		}
		return true
	}
}
