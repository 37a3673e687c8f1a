// Package oldworker is a worker of the old runtime, for side-by-side and rollback tests: it
// claims through emp's findMatchingJob Redis function and writes progress, completion and its
// status the way emp's redis-direct worker does (emp-reference §1.5, §4.1), with none of this
// machine's additions (no leases, no wake-ups: it polls).
package oldworker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// LoadFunction loads emp's findMatchingJob library into Redis, as emp's installer does
// (FUNCTION LOAD REPLACE). code is the content of findMatchingJob.lua.
func LoadFunction(ctx context.Context, rdb *redis.Client, code string) error {
	if err := rdb.FunctionLoadReplace(ctx, code).Err(); err != nil {
		return fmt.Errorf("FUNCTION LOAD findMatchingJob (needs Redis 7): %w", err)
	}
	return nil
}

// Worker is one old worker.
type Worker struct {
	ID        string
	MachineID string
	Services  []string      // job_service_required values it takes
	Poll      time.Duration // the old default was 1 s; tests poll faster

	mu        sync.Mutex
	completed []string
}

// Completed lists the jobs this worker completed, in order.
func (w *Worker) Completed() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.completed...)
}

func iso(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// Run claims and runs jobs until ctx ends. A job "runs" for its payload's duration_ms.
func (w *Worker) Run(ctx context.Context, rdb *redis.Client) error {
	caps, _ := json.Marshal(map[string]any{
		"worker_id": w.ID, "machine_id": w.MachineID, "services": w.Services, "job_service_required_map": w.Services,
		"hardware":        map[string]any{"ram_gb": 8, "gpu_memory_gb": 8, "gpu_model": "unknown"},
		"customer_access": map[string]any{"isolation": "loose", "max_concurrent_customers": 10},
		"performance":     map[string]any{"concurrent_jobs": 1, "quality_levels": []string{"fast", "balanced", "quality"}, "max_processing_time_minutes": 60},
		"models":          map[string]any{},
	})
	rdb.HSet(ctx, "worker:"+w.ID, "worker_id", w.ID, "machine_id", w.MachineID, "status", "idle", "capabilities", string(caps))
	for {
		res, err := rdb.FCall(ctx, "findMatchingJob", nil, string(caps), "100").Result()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, redis.Nil) || (err == nil && res == nil):
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(w.Poll):
			}
			continue
		case err != nil:
			return fmt.Errorf("FCALL findMatchingJob: %w", err)
		}
		var claim struct {
			JobID string            `json:"jobId"`
			Job   map[string]string `json:"job"`
		}
		s, _ := res.(string)
		if err := json.Unmarshal([]byte(s), &claim); err != nil {
			return fmt.Errorf("findMatchingJob answered %q: %w", s, err)
		}
		if err := w.run(ctx, rdb, claim.JobID, claim.Job); err != nil {
			return err
		}
	}
}

func (w *Worker) status(ctx context.Context, rdb *redis.Client, from, to, jobID string) {
	rdb.HSet(ctx, "worker:"+w.ID, "status", to, "last_status_change", iso(time.Now()), "current_job_id", jobID)
	msg, _ := json.Marshal(map[string]any{"worker_id": w.ID, "old_status": from, "new_status": to, "current_job_id": jobID, "timestamp": time.Now().UnixMilli()})
	rdb.Publish(ctx, "worker_status", msg)
}

// run processes one claimed job the way emp's worker does: start, progress, the work, then
// complete (its writes in emp's order, without the attestation key).
func (w *Worker) run(ctx context.Context, rdb *redis.Client, id string, job map[string]string) error {
	start := time.Now()
	w.status(ctx, rdb, "idle", "busy", id)
	rdb.HSet(ctx, "job:"+id, "status", "in_progress", "started_at", iso(start))
	rdb.HSet(ctx, "job:"+id+":progress", "progress", "50", "status", "in_progress", "message", "processing", "updated_at", iso(time.Now()))
	prog, _ := json.Marshal(map[string]any{"job_id": id, "worker_id": w.ID, "progress": 50, "status": "in_progress", "message": "processing",
		"current_step": "", "total_steps": 0, "estimated_completion": "", "timestamp": time.Now().UnixMilli()})
	rdb.Publish(ctx, "update_job_progress", prog)

	var payload struct {
		DurationMS int `json:"duration_ms"`
	}
	_ = json.Unmarshal([]byte(job["payload"]), &payload)
	select {
	case <-ctx.Done():
		return nil // the test is over; emp's worker would fail the job for good here
	case <-time.After(time.Duration(payload.DurationMS) * time.Millisecond):
	}

	result := map[string]any{"success": true, "data": map[string]any{"worker": w.ID, "runtime": "old"},
		"processing_time_ms": time.Since(start).Milliseconds()}
	done := iso(time.Now())
	rdb.HGetAll(ctx, "job:"+id)
	rdb.HSet(ctx, "job:"+id, "status", "completed", "completed_at", done)
	rdb.HDel(ctx, "jobs:active:"+w.ID, id)
	stored, _ := json.Marshal(map[string]any{"success": true, "data": result, "completed_at": done})
	rdb.HSet(ctx, "jobs:completed", id, stored)
	rdb.Expire(ctx, "jobs:completed", 24*time.Hour)
	msg := map[string]any{"job_id": id, "worker_id": w.ID, "progress": 100, "status": "completed", "message": "Job completed successfully",
		"result": result, "timestamp": time.Now().UnixMilli()}
	if wf := job["workflow_id"]; wf != "" {
		msg["workflow_id"] = wf
	}
	if n, err := strconv.Atoi(job["current_step"]); err == nil {
		msg["current_step"] = n
	}
	b, _ := json.Marshal(msg)
	rdb.Publish(ctx, "complete_job", b)
	w.status(ctx, rdb, "busy", "idle", "")
	w.mu.Lock()
	w.completed = append(w.completed, id)
	w.mu.Unlock()
	return nil
}
