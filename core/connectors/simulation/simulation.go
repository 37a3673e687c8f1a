// Package simulation is a connector that pretends to do GPU work: it takes a configurable time,
// reports progress in steps, and fails at a configurable rate. It makes the embedded demo and the
// end-to-end tests exercise the whole job lifecycle without any external service.
package simulation

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"time"

	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/job"
)

// Payload is what a simulation job may set; absent fields take the machine's defaults
// (WORKER_SIMULATION_PROCESSING_TIME, WORKER_SIMULATION_STEPS, WORKER_SIMULATION_FAILURE_RATE).
type Payload struct {
	DurationMS  *int64   `json:"duration_ms"`
	Steps       *int     `json:"steps"`
	FailureRate *float64 `json:"failure_rate"`
	// ModelLoadMS simulates loading a model before the steps: the job's resource record counts
	// it as preparation.
	ModelLoadMS int64 `json:"model_load_ms"`
	// Fail makes the attempt fail (retryable); FailPermanently makes it fail for good.
	Fail            bool `json:"fail"`
	FailPermanently bool `json:"fail_permanently"`
}

// Settings are the machine's defaults for simulation jobs; a job's payload may override them.
type Settings struct {
	Duration    time.Duration // WORKER_SIMULATION_PROCESSING_TIME
	Steps       int           // WORKER_SIMULATION_STEPS
	FailureRate float64       // WORKER_SIMULATION_FAILURE_RATE (0..1)
}

// Connector runs simulation jobs.
type Connector struct {
	defaults Settings
}

// New returns a simulation connector with the machine's defaults.
func New(defaults Settings) *Connector { return &Connector{defaults: defaults} }

// ErrSimulatedFailure is the error of a failure the job or the failure rate asked for.
var ErrSimulatedFailure = errors.New("simulated failure")

// Run implements connectors.Connector.
func (c *Connector) Run(ctx context.Context, j *job.Job, progress job.ProgressFunc) (job.Result, error) {
	start := time.Now()
	var p Payload
	if err := connectors.DecodePayload(j, &p); err != nil {
		return job.Result{}, err
	}
	duration, steps, rate := c.defaults.Duration, c.defaults.Steps, c.defaults.FailureRate
	if p.DurationMS != nil {
		duration = time.Duration(*p.DurationMS) * time.Millisecond
	}
	if p.Steps != nil {
		steps = *p.Steps
	}
	if p.FailureRate != nil {
		rate = *p.FailureRate
	}
	if duration < 0 || steps < 1 || steps > 100000 || rate < 0 || rate > 1 || p.ModelLoadMS < 0 {
		return job.Result{}, job.Permanent(fmt.Errorf(
			"simulation job %s asks for duration_ms=%d, steps=%d, failure_rate=%v, model_load_ms=%d; use duration_ms ≥ 0, 1 ≤ steps ≤ 100000, 0 ≤ failure_rate ≤ 1 and model_load_ms ≥ 0",
			j.ID, duration.Milliseconds(), steps, rate, p.ModelLoadMS))
	}
	if p.ModelLoadMS > 0 {
		progress(job.Progress{Message: "loading model"})
		end := job.Mark(ctx, job.PhasePrepare)
		err := connectors.Sleep(ctx, time.Duration(p.ModelLoadMS)*time.Millisecond)
		end()
		if err != nil {
			return job.Result{}, err
		}
	}
	for i := 1; i <= steps; i++ {
		if err := connectors.Sleep(ctx, duration/time.Duration(steps)); err != nil {
			return job.Result{}, err
		}
		progress(job.Progress{Percent: float64(i) * 100 / float64(steps), Message: fmt.Sprintf("step %d/%d", i, steps), Step: i, TotalSteps: steps})
	}
	switch {
	case p.FailPermanently:
		return job.Result{}, job.Permanent(fmt.Errorf("%w: the payload asked for a permanent failure", ErrSimulatedFailure))
	case p.Fail:
		return job.Result{}, fmt.Errorf("%w: the payload asked for a failure", ErrSimulatedFailure)
	case rate > 0 && draw(j) < rate:
		return job.Result{}, fmt.Errorf("%w (failure_rate %v)", ErrSimulatedFailure, rate)
	}
	elapsed := time.Since(start)
	return job.Result{
		Success: true,
		Data: map[string]any{
			"simulated": true, "steps": steps, "duration_ms": duration.Milliseconds(), "attempt": j.RetryCount + 1,
		},
		ProcessingTimeMS: elapsed.Milliseconds(),
		ServiceMetadata:  &job.ServiceMetadata{ServiceVersion: "simulation-1", ServiceType: "simulation"},
	}, nil
}

// draw is a deterministic number in [0,1) for this job and attempt, so a failure rate gives
// reproducible runs and a retry draws again.
func draw(j *job.Job) float64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", j.ID, j.RetryCount)
	return rand.New(rand.NewPCG(h.Sum64(), 0x5eed)).Float64()
}
