// Package runpod runs jobs on RunPod serverless endpoints: POST /run, then /status/{id} until
// the job ends, POST /cancel/{id} when the job is cancelled.
package runpod

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/connectors/remote"
	"github.com/emp-job-queue/machine/core/job"
)

// Settings configure the connector; the key is never logged or shown.
type Settings struct {
	BaseURL    string // default https://api.runpod.ai/v2
	APIKey     string
	EndpointID string // default endpoint; a payload's endpoint_id wins
	PollEvery  time.Duration
	MaxWait    time.Duration
	RatePerSec float64
	Throttle   remote.Observer // hears 429s, the breaker and failed requests (nil: nobody)
}

// Connector runs RunPod jobs.
type Connector struct {
	s      Settings
	client *remote.Client
}

// New returns a connector.
func New(s Settings) *Connector {
	if s.BaseURL == "" {
		s.BaseURL = "https://api.runpod.ai/v2"
	}
	s.BaseURL = strings.TrimRight(s.BaseURL, "/")
	if s.PollEvery <= 0 {
		s.PollEvery = time.Second
	}
	if s.MaxWait <= 0 {
		s.MaxWait = 30 * time.Minute
	}
	return &Connector{s: s, client: remote.New(remote.Options{Name: "RunPod", RatePerSecond: s.RatePerSec, Secrets: []string{s.APIKey}, Observer: s.Throttle})}
}

// Available implements connectors.Availability.
func (c *Connector) Available() bool { return c.client.Available() }

// Run implements connectors.Connector.
func (c *Connector) Run(ctx context.Context, j *job.Job, progress job.ProgressFunc) (job.Result, error) {
	if c.s.APIKey == "" {
		return job.Result{}, job.Permanent(fmt.Errorf("RUNPOD_API_KEY (or RUNPOD_API_KEY_FILE) is not set on this machine"))
	}
	start := time.Now()
	var p struct {
		EndpointID string         `json:"endpoint_id"`
		Input      map[string]any `json:"input"`
	}
	if err := connectors.DecodePayload(j, &p); err != nil {
		return job.Result{}, err
	}
	endpoint := p.EndpointID
	if endpoint == "" {
		endpoint = c.s.EndpointID
	}
	if endpoint == "" || p.Input == nil {
		return job.Result{}, job.Permanent(fmt.Errorf("runpod job %s needs an input object and an endpoint (payload endpoint_id or RUNPOD_ENDPOINT_ID)", j.ID))
	}
	base := c.s.BaseURL + "/" + endpoint
	var run struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Output any    `json:"output"`
		Error  string `json:"error"`
		// What RunPod bills, in ms: the worker's execution time, and the time queued before it.
		ExecutionTime *float64 `json:"executionTime"`
		DelayTime     *float64 `json:"delayTime"`
	}
	if err := c.client.JSON(ctx, "POST", base+"/run", c.s.APIKey, map[string]any{"input": p.Input}, &run); err != nil {
		return job.Result{}, err
	}
	id := run.ID
	err := remote.Poll(ctx, c.s.PollEvery, c.s.MaxWait, func(ctx context.Context) (bool, error) {
		if err := c.client.JSON(ctx, "GET", base+"/status/"+id, c.s.APIKey, nil, &run); err != nil {
			return false, err
		}
		switch run.Status {
		case "COMPLETED":
			return true, nil
		case "FAILED", "CANCELLED", "TIMED_OUT":
			return false, fmt.Errorf("RunPod job %s %s: %s", id, strings.ToLower(run.Status), run.Error)
		}
		progress(job.Progress{Percent: 50, Message: "RunPod " + strings.ToLower(run.Status)})
		return false, nil
	})
	if ctx.Err() != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = c.client.JSON(cctx, "POST", base+"/cancel/"+id, c.s.APIKey, nil, nil)
		cancel()
		return job.Result{}, ctx.Err()
	}
	if err != nil {
		return job.Result{}, err
	}
	var usage map[string]any
	if run.ExecutionTime != nil {
		usage = map[string]any{"executionTime": *run.ExecutionTime}
		if run.DelayTime != nil {
			usage["delayTime"] = *run.DelayTime
		}
	}
	return job.Result{Success: true, Data: map[string]any{"runpod_id": id, "output": run.Output},
		ProcessingTimeMS: time.Since(start).Milliseconds(),
		ServiceMetadata:  &job.ServiceMetadata{ServiceVersion: "runpod-v2", ServiceType: "runpod", ServiceJobID: id},
		APIUsage:         usage}, nil
}
