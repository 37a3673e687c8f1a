// Package job holds the vocabulary shared by the broker, the worker slots and the connectors:
// a claimed job, its progress, its result, and how a failure is classified.
package job

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"time"
)

// Job is a claimed job: the job:{id} hash as it was when claimed (PROTOCOL §1), with the fields
// a connector needs decoded.
type Job struct {
	ID         string
	Service    string // service_required
	Payload    json.RawMessage
	Ctx        json.RawMessage // storage context; never sent to external APIs
	CustomerID string
	RetryCount int
	MaxRetries int
	// Fields is the whole hash as claimed: every value a string, absent values "".
	Fields map[string]string
	// Refused is set when the machine refuses the job before running it (too large to decode):
	// the slot fails it with this error instead of running it.
	Refused error
}

// Outcome is how one attempt of a job on this machine ended, as the state store, the console
// and the metrics name it.
type Outcome string

const (
	Completed  Outcome = "completed"
	Retried    Outcome = "retried"    // failed; back in jobs:pending for another attempt
	Failed     Outcome = "failed"     // failed for good
	Released   Outcome = "released"   // back in jobs:pending without using a retry (a drain)
	Cancelled  Outcome = "cancelled"  // by the API
	Unrecorded Outcome = "unrecorded" // the broker never took its outcome; lease recovery will
)

// DefaultMaxRetries is the API's default for max_retries.
const DefaultMaxRetries = 3

// FromHash builds a Job from the job:{id} hash. It never fails: bad values fall back to the
// API's defaults, and an invalid payload is kept as-is for the slot to reject with a clear error.
func FromHash(h map[string]string) *Job {
	j := &Job{
		ID:         h["id"],
		Service:    h["service_required"],
		CustomerID: h["customer_id"],
		RetryCount: atoiDefault(h["retry_count"], 0),
		MaxRetries: atoiDefault(h["max_retries"], DefaultMaxRetries),
		Fields:     h,
	}
	if p := h["payload"]; p != "" {
		j.Payload = json.RawMessage(p)
	}
	if c := h["ctx"]; c != "" {
		j.Ctx = json.RawMessage(c)
	}
	return j
}

func atoiDefault(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return def
	}
	return n
}

// Score is the job's rank in jobs:pending with the API's formula (PROTOCOL §1):
// P*1e15 - floor(T/1000), P = workflow_priority || priority, T = workflow_datetime || created_at (ms).
// Higher scores are claimed first.
//
// Values that are not finite numbers fall back to the API's defaults (priority 50, now), so a
// score is always a number Redis accepts.
func Score(fields map[string]string, now time.Time) float64 {
	p, ok := finite(fields["workflow_priority"])
	if !ok {
		if p, ok = finite(fields["priority"]); !ok {
			p = 50
		}
	}
	t, ok := finite(fields["workflow_datetime"])
	if !ok || t == 0 {
		t = float64(now.UnixMilli())
		if ts, err := time.Parse(time.RFC3339Nano, fields["created_at"]); err == nil {
			t = float64(ts.UnixMilli())
		}
	}
	if s := p*1e15 - math.Floor(t/1000); !math.IsInf(s, 0) && !math.IsNaN(s) {
		return s
	}
	return 50*1e15 - math.Floor(float64(now.UnixMilli())/1000)
}

func finite(s string) (float64, bool) {
	f, err := strconv.ParseFloat(s, 64)
	return f, err == nil && !math.IsNaN(f) && !math.IsInf(f, 0)
}

// Progress is one progress report of a running job.
type Progress struct {
	Percent    float64 // 0..100
	Message    string
	Step       int
	TotalSteps int
	// StepName is sent as current_step when Step is 0: the name of a stage, as emp's
	// connectors send it ("initializing", "processing", …).
	StepName string
	// Milestone marks a report the clients must see even when it follows another closely (a
	// connector's named stages). Other reports are spaced out before they reach the broker.
	Milestone bool
}

// ProgressFunc receives a connector's progress reports. It never blocks for long: reports are
// spaced out before they reach the broker, except the first, 100 % and milestones.
type ProgressFunc func(Progress)

// Result is the JobResult of PROTOCOL §3.
type Result struct {
	Success          bool             `json:"success"`
	Data             any              `json:"data,omitempty"`
	Error            string           `json:"error,omitempty"`
	Metadata         map[string]any   `json:"metadata,omitempty"`
	ProcessingTimeMS int64            `json:"processing_time_ms"`
	OutputFiles      []OutputFile     `json:"output_files,omitempty"`
	ServiceMetadata  *ServiceMetadata `json:"service_metadata,omitempty"`
	// APIUsage is the usage a remote API reported for the job (OpenAI usage tokens, Replicate
	// metrics, RunPod execution time). It is not part of the result's JSON: the resource record
	// carries it, as metadata.resources.api_usage.
	APIUsage map[string]any `json:"-"`
}

// OutputFile describes a file a job produced.
type OutputFile struct {
	Filename  string         `json:"filename"`
	Path      string         `json:"path"`
	Type      string         `json:"type"` // image|video|audio|text|binary
	SizeBytes int64          `json:"size_bytes"`
	MimeType  string         `json:"mime_type,omitempty"`
	Metadata  map[string]any `json:"metadata,omitempty"`
}

// ServiceMetadata says which service produced a result.
type ServiceMetadata struct {
	ServiceVersion string `json:"service_version"`
	ServiceType    string `json:"service_type,omitempty"`
	ServiceJobID   string `json:"service_job_id,omitempty"`
	ModelUsed      string `json:"model_used,omitempty"`
}

// permanent marks an error that retrying cannot fix (a bad payload, a refused request).
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent marks err as not worth retrying: the job fails at once, whatever its retries left.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p permanent
	return errors.As(err, &p)
}
