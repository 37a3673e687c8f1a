package broker

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/emp-job-queue/machine/core/job"
)

// JobSpec is a job to submit, with the fields of the API's POST /api/jobs body (emp-reference §6).
type JobSpec struct {
	ID               string // optional; a UUID v4 otherwise
	Service          string
	Priority         int // 0 means the API default, 50
	Payload          json.RawMessage
	Requirements     json.RawMessage
	CustomerID       string
	MaxRetries       *int
	RetryCount       int
	WorkflowID       string
	WorkflowPriority *int
	WorkflowDatetime *int64 // epoch ms
	CurrentStep      *int
	TotalSteps       *int
	Ctx              json.RawMessage
}

// NewID returns a random UUID v4, the API's job id format.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func optInt[T int | int64](p *T) string {
	if p == nil {
		return ""
	}
	return strconv.FormatInt(int64(*p), 10)
}

func jsonOrEmpty(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	return string(raw)
}

// Submit writes a job exactly as the API does: one HMSET of every field (absent values ""),
// ZADD jobs:pending with the API's score, PUBLISH job_submitted, and workflow_submitted for a
// workflow's first step. It runs as one MULTI so a reader never sees half a job.
func (b *Broker) Submit(ctx context.Context, s JobSpec) (string, error) {
	if s.Service == "" {
		return "", fmt.Errorf("submit: a job needs a service (service_required)")
	}
	for name, raw := range map[string]json.RawMessage{"payload": s.Payload, "requirements": s.Requirements, "ctx": s.Ctx} {
		if len(raw) > 0 && !json.Valid(raw) {
			return "", fmt.Errorf("submit: %s is not valid JSON", name)
		}
	}
	if s.ID == "" {
		s.ID = NewID()
	}
	if s.Priority == 0 {
		s.Priority = 50
	}
	maxRetries := job.DefaultMaxRetries
	if s.MaxRetries != nil {
		maxRetries = *s.MaxRetries
	}
	payload := jsonOrEmpty(s.Payload)
	if payload == "" {
		payload = "{}"
	}
	now := b.now()
	createdAt := ISO(now)
	fields := map[string]string{
		"id": s.ID, "service_required": s.Service, "priority": strconv.Itoa(s.Priority),
		"payload": payload, "requirements": jsonOrEmpty(s.Requirements), "customer_id": s.CustomerID,
		"created_at": createdAt, "status": "pending", "retry_count": strconv.Itoa(s.RetryCount),
		"max_retries": strconv.Itoa(maxRetries), "workflow_id": s.WorkflowID,
		"workflow_priority": optInt(s.WorkflowPriority), "workflow_datetime": optInt(s.WorkflowDatetime),
		"current_step": optInt(s.CurrentStep), "total_steps": optInt(s.TotalSteps), "ctx": jsonOrEmpty(s.Ctx),
		"job_trace_id": "", "job_span_id": "", "workflow_trace_id": "", "workflow_span_id": "",
	}
	msg := map[string]any{
		"job_id": s.ID, "service_required": s.Service, "priority": s.Priority, "payload": json.RawMessage(payload),
		"customer_id": s.CustomerID, "created_at": createdAt, "status": "pending", "timestamp": now.UnixMilli(),
	}
	if r := jsonOrEmpty(s.Requirements); r != "" {
		msg["requirements"] = json.RawMessage(r)
	}
	if s.WorkflowID != "" {
		msg["workflow_id"] = s.WorkflowID
	}
	for k, v := range map[string]any{"workflow_priority": s.WorkflowPriority, "workflow_datetime": s.WorkflowDatetime,
		"current_step": s.CurrentStep, "total_steps": s.TotalSteps} {
		switch p := v.(type) {
		case *int:
			if p != nil {
				msg[k] = *p
			}
		case *int64:
			if p != nil {
				msg[k] = *p
			}
		}
	}
	submitted, _ := json.Marshal(msg)

	pipe := b.rdb.TxPipeline()
	pipe.HSet(ctx, JobKey(s.ID), fields)
	pipe.ZAdd(ctx, KeyPending, redisZ(job.Score(fields, now), s.ID))
	pipe.Publish(ctx, ChanSubmitted, submitted)
	if firstStep(s) {
		wf, _ := json.Marshal(map[string]any{
			"workflow_id": s.WorkflowID, "first_job_id": s.ID, "total_steps": *s.TotalSteps,
			"workflow_priority": s.WorkflowPriority, "workflow_datetime": s.WorkflowDatetime,
			"customer_id": s.CustomerID, "service_required": s.Service, "timestamp": now.UnixMilli(),
			"workflow_type": s.Service, "message": "Workflow submitted",
		})
		pipe.Publish(ctx, ChanWorkflowNew, wf)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return "", fmt.Errorf("submit %s: %w", s.ID, err)
	}
	return s.ID, nil
}

func firstStep(s JobSpec) bool {
	if s.WorkflowID == "" || s.CurrentStep == nil || s.TotalSteps == nil {
		return false
	}
	return *s.CurrentStep == 1 || (*s.CurrentStep == 0 && *s.TotalSteps >= 1)
}
