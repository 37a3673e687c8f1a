package broker

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emp-job-queue/machine/core/job"
)

// Attestations are the worker's durable "I finished this" and "I failed this" records
// (emp-reference §11), written by emp's worker in completeJob and failJob
// (apps/worker/src/redis-direct-worker-client.ts) and read by the API's GET /api/attestations
// (a scan of worker:completion:*) and the monitor's forensics pages. They carry the same keys
// and fields, and, like emp's, no TTL. We write them in the transition's own script, so a job is
// never completed without its attestation.

// unknownIdentity is what emp writes when MACHINE_ID or VERSION is not set.
const unknownIdentity = "unknown"

// SetIdentity sets the machine_id and worker_version attestations carry. Call it before the
// broker is shared.
func (b *Broker) SetIdentity(machineID, version string) {
	b.machineID, b.version = machineID, version
}

func (b *Broker) identity() (machineID, version string) {
	machineID, version = b.machineID, b.version
	if machineID == "" {
		machineID = unknownIdentity
	}
	if version == "" {
		version = unknownIdentity
	}
	return machineID, version
}

// stepID is the job id without emp's "step-" prefix; jobPrefix names the workflow, if any.
func stepID(j *job.Job) string { return strings.TrimPrefix(j.ID, "step-") }

func jobPrefix(j *job.Job) string {
	if wf := j.Fields["workflow_id"]; wf != "" {
		return "job-id:" + wf + ":"
	}
	return ""
}

// CompletionKey is the completion attestation of a job's attempt.
func CompletionKey(j *job.Job) string {
	return "worker:completion:" + jobPrefix(j) + "step-id:" + stepID(j) + ":attempt:" + formatNumber(attemptRetryCount(j)+1)
}

// orNull is a hash field as emp writes it: `jobData.field || null`.
func orNull(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// completionRecord is emp's workerCompletionRecord, field for field and in its order.
type completionRecord struct {
	JobID                string  `json:"job_id"`
	WorkerID             string  `json:"worker_id"`
	Status               string  `json:"status"`
	CompletedAt          string  `json:"completed_at"`
	Result               string  `json:"result"`
	RawServiceOutput     string  `json:"raw_service_output"`
	RawServiceRequest    *string `json:"raw_service_request"`
	RetryCount           float64 `json:"retry_count"`
	WorkflowID           *string `json:"workflow_id"`
	CurrentStep          *string `json:"current_step"`
	TotalSteps           *string `json:"total_steps"`
	MachineID            string  `json:"machine_id"`
	WorkerVersion        string  `json:"worker_version"`
	AttestationCreatedAt int64   `json:"attestation_created_at"`
}

// completionAttestation is the key and value of a completed attempt. result is the JobResult
// as stored in jobs:completed.
func (b *Broker) completionAttestation(j *job.Job, workerID string, result []byte, completedAt time.Time) (string, []byte, error) {
	clean, err := sanitizeBase64(result)
	if err != nil {
		return "", nil, err
	}
	var rawRequest *string // emp: result.raw_request_payload, which no JobResult of ours carries
	var top map[string]json.RawMessage
	if json.Unmarshal(result, &top) == nil && len(top["raw_request_payload"]) > 0 && string(top["raw_request_payload"]) != "null" {
		s := string(top["raw_request_payload"])
		rawRequest = &s
	}
	machineID, version := b.identity()
	f := j.Fields
	rec := completionRecord{
		JobID: j.ID, WorkerID: workerID, Status: "completed", CompletedAt: ISO(completedAt),
		Result: string(clean), RawServiceOutput: string(clean), RawServiceRequest: rawRequest,
		RetryCount: attemptRetryCount(j), WorkflowID: orNull(f["workflow_id"]), CurrentStep: orNull(f["current_step"]),
		TotalSteps: orNull(f["total_steps"]), MachineID: machineID, WorkerVersion: version,
		AttestationCreatedAt: completedAt.UnixMilli(),
	}
	v, err := json.Marshal(rec)
	return CompletionKey(j), v, err
}

// attemptRetryCount is the retry count emp's completeJob records: the workflow's retry_attempt
// from ctx, else the payload's ctx.retry_count or ctx.retryCount, else the job's retry_count,
// each taken when it is a non-zero number (or numeric text; emp would concatenate text).
func attemptRetryCount(j *job.Job) float64 {
	var ctx struct {
		WorkflowContext struct {
			RetryAttempt any `json:"retry_attempt"`
		} `json:"workflow_context"`
	}
	var payload struct {
		Ctx struct {
			RetryCount  any `json:"retry_count"`
			RetryCount2 any `json:"retryCount"`
		} `json:"ctx"`
	}
	_ = json.Unmarshal(j.Ctx, &ctx)
	_ = json.Unmarshal(j.Payload, &payload)
	for _, v := range []any{ctx.WorkflowContext.RetryAttempt, payload.Ctx.RetryCount, payload.Ctx.RetryCount2} {
		switch t := v.(type) {
		case float64:
			if t != 0 {
				return t
			}
		case string:
			if n, err := strconv.ParseFloat(strings.TrimSpace(t), 64); err == nil && n != 0 {
				return n
			}
		}
	}
	return float64(j.RetryCount)
}

func formatNumber(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// failureRecord is emp's workerFailureRecord, field for field and in its order.
type failureRecord struct {
	AttestationType      string  `json:"attestation_type"`
	JobID                string  `json:"job_id"`
	WorkerID             string  `json:"worker_id"`
	Status               string  `json:"status"`
	FailedAt             string  `json:"failed_at"`
	ErrorMessage         string  `json:"error_message"`
	FailureClass                 // failure_type, failure_reason, failure_description
	RawServiceOutput     *string `json:"raw_service_output"`
	RawServiceRequest    *string `json:"raw_service_request"`
	RetryCount           int     `json:"retry_count"`
	WillRetry            bool    `json:"will_retry"`
	MaxRetries           int     `json:"max_retries"`
	WorkflowID           *string `json:"workflow_id"`
	CurrentStep          *string `json:"current_step"`
	TotalSteps           *string `json:"total_steps"`
	WorkflowImpact       *string `json:"workflow_impact"`
	MachineID            string  `json:"machine_id"`
	WorkerVersion        string  `json:"worker_version"`
	AttestationCreatedAt int64   `json:"attestation_created_at"`
}

// workflowFailureRecord is emp's workflowFailureAttestation: the failure record and three more
// fields.
type workflowFailureRecord struct {
	failureRecord
	WorkflowAttestationType string `json:"workflow_attestation_type"`
	FailedJobID             string `json:"failed_job_id"`
	WorkflowStatus          string `json:"workflow_status"`
}

// failureAttestations are the keys and values emp's failJob writes for a failed attempt
// (retries is the new retry_count): worker:failure:…:attempt:{n} while the job will be retried,
// else worker:failure:…:permanent plus the same record under the old completion key
// worker:completion:…step-id:{id}; and for a workflow's job, workflow:failure:{wf}:attempt:{n}
// or :permanent.
func (b *Broker) failureAttestations(j *job.Job, workerID, reason string, retries int, willRetry bool, failedAt time.Time) ([]string, error) {
	machineID, version := b.identity()
	f := j.Fields
	wf := f["workflow_id"]
	rec := failureRecord{
		AttestationType: "failure_permanent", JobID: j.ID, WorkerID: workerID, Status: "failed_permanent",
		FailedAt: ISO(failedAt), ErrorMessage: reason, FailureClass: ClassifyFailure(reason),
		RetryCount: retries, WillRetry: willRetry, MaxRetries: j.MaxRetries,
		WorkflowID: orNull(wf), CurrentStep: orNull(f["current_step"]), TotalSteps: orNull(f["total_steps"]),
		MachineID: machineID, WorkerVersion: version, AttestationCreatedAt: failedAt.UnixMilli(),
	}
	impact := "workflow_terminated"
	suffix := "permanent"
	if willRetry {
		rec.AttestationType, rec.Status, impact, suffix = "failure_retry", "failed_retrying", "workflow_interrupted", "attempt:"+strconv.Itoa(retries)
	}
	if wf != "" {
		rec.WorkflowImpact = &impact
	}
	v, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("encode failure attestation: %w", err)
	}
	step := "step-id:" + stepID(j)
	kv := []string{"worker:failure:" + jobPrefix(j) + step + ":" + suffix, string(v)}
	if !willRetry {
		kv = append(kv, "worker:completion:"+jobPrefix(j)+step, string(v))
	}
	if wf != "" {
		w, err := json.Marshal(workflowFailureRecord{failureRecord: rec, WorkflowAttestationType: "job_failure",
			FailedJobID: j.ID, WorkflowStatus: rec.Status})
		if err != nil {
			return nil, fmt.Errorf("encode workflow failure attestation: %w", err)
		}
		kv = append(kv, "workflow:failure:"+wf+":"+suffix, string(w))
	}
	return kv, nil
}
