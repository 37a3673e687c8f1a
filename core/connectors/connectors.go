// Package connectors defines what every connector implements: run one claimed job, report its
// progress, and return its result or a classified error. Each connector lives in a package of
// its own below this one.
package connectors

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/emp-job-queue/machine/core/job"
)

// Connector runs jobs for one connector type. Run is called from one worker slot at a time per
// job, but a connector value may serve several slots at once, so it must be safe for concurrent
// use. Run must return promptly when ctx ends (cancellation, drain timeout, job timeout).
//
// A returned error fails the attempt: it is retried while retries are left, unless it is marked
// with job.Permanent (a bad payload, a request the remote API refused for good).
type Connector interface {
	Run(ctx context.Context, j *job.Job, progress job.ProgressFunc) (job.Result, error)
}

// DecodePayload decodes a job's payload into v. A payload that does not decode is a permanent
// failure with a sentence that names the job and what is wrong.
func DecodePayload(j *job.Job, v any) error {
	raw := j.Payload
	if len(raw) == 0 {
		raw = json.RawMessage("{}")
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return job.Permanent(fmt.Errorf("payload of %s job %s does not fit the connector (%v); fix the submitter's payload", j.Service, j.ID, err))
	}
	return nil
}

// Sleep waits for d or until ctx ends, whichever is first.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Availability is implemented by connectors that can tell they should not take work now (a
// remote API's circuit breaker is open): the slot then claims nothing, and other machines take
// the jobs.
type Availability interface {
	Available() bool
}
