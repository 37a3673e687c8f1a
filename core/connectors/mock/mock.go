// Package mock is the old runtime's mock connector (emp-reference §8): payload
// {delay_ms, should_fail, test_data}, progress 10/80/100, a retryable failure on request.
package mock

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/job"
)

// Payload is the old mock payload.
type Payload struct {
	DelayMS    *int64          `json:"delay_ms"`
	ShouldFail bool            `json:"should_fail"`
	TestData   json.RawMessage `json:"test_data"`
}

// DefaultDelay is the old connector's default delay_ms.
const DefaultDelay = 100 * time.Millisecond

// ErrRequested is the old connector's failure text.
//
//lint:ignore ST1005 the old runtime's exact text, which clients may match
var ErrRequested = errors.New("Mock failure requested")

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
	delay := DefaultDelay
	if p.DelayMS != nil {
		delay = time.Duration(max(*p.DelayMS, 0)) * time.Millisecond
	}
	progress(job.Progress{Percent: 10, Message: "mock started"})
	if err := connectors.Sleep(ctx, delay); err != nil {
		return job.Result{}, err
	}
	progress(job.Progress{Percent: 80, Message: "mock processing"})
	if p.ShouldFail {
		return job.Result{}, ErrRequested
	}
	progress(job.Progress{Percent: 100, Message: "mock done"})
	elapsed := time.Since(start).Milliseconds()
	var testData any
	if len(p.TestData) > 0 {
		testData = p.TestData
	}
	return job.Result{
		Success: true,
		Data: map[string]any{
			"test_data": testData, "mock_url": "mock://" + j.ID, "processing_time_ms": elapsed,
		},
		ProcessingTimeMS: elapsed,
	}, nil
}
