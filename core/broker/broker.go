// Package broker speaks the emp-job-queue Redis protocol (PROTOCOL.md §1-5): every key, field,
// channel and Lua script of the machine lives here and only here. Each job transition is one
// atomic Lua script run with EVALSHA, so a crash can never leave a job half-moved.
package broker

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/job"
)

// Keys and channels of the protocol.
const (
	KeyPending      = "jobs:pending"
	KeyCompleted    = "jobs:completed"
	KeyFailed       = "jobs:failed"
	ChanSubmitted   = "job_submitted"
	ChanClaimed     = "job_claimed"
	ChanProgress    = "update_job_progress"
	ChanComplete    = "complete_job"
	ChanFailed      = "job_failed"
	ChanWorker      = "worker_status"
	ChanCancel      = "cancel_job"
	ChanWorkflowNew = "workflow_submitted"
	// ChanRequeued is ours (additive): published when a job goes back to jobs:pending, so idle
	// slots wake for retries as they do for new jobs. Old readers never subscribe to it.
	ChanRequeued = "job_requeued"
)

// JobKey is the hash of one job.
func JobKey(id string) string { return "job:" + id }

// ProgressKey is the progress hash of one job.
func ProgressKey(id string) string { return "job:" + id + ":progress" }

// ActiveKey is the hash of a worker's in-flight jobs.
func ActiveKey(workerID string) string { return "jobs:active:" + workerID }

// WorkerKey is a worker's hash.
func WorkerKey(workerID string) string { return "worker:" + workerID }

// HeartbeatKey is a worker's heartbeat key (SETEX 60).
func HeartbeatKey(workerID string) string { return "worker:" + workerID + ":heartbeat" }

// MachineStatusChannel is where the machine publishes its status for the monitor.
func MachineStatusChannel(machineID string) string { return "machine:status:" + machineID }

//go:embed lua/*.lua
var luaFS embed.FS

func script(name string) *redis.Script {
	src, err := luaFS.ReadFile("lua/" + name + ".lua")
	if err != nil {
		panic(fmt.Sprintf("broker: missing embedded script %s: %v", name, err))
	}
	return redis.NewScript(string(src))
}

var (
	claimScript    = script("claim")
	startScript    = script("start")
	progressScript = script("progress")
	completeScript = script("complete")
	failScript     = script("fail")
	releaseScript  = script("release")
)

// Broker is the machine's side of the protocol. It is safe for concurrent use.
type Broker struct {
	rdb    redis.UniversalClient
	now    func() time.Time
	policy Policy
	// machineID and version go into attestations (SetIdentity).
	machineID, version string
	memory             *memory // what the claim script must forget of its non-matches
	routing            Routing // the claim's preferences (SetRouting)
	warm               warmth  // services this machine completed recently (affinity)
}

// New returns a broker over an open Redis client.
func New(rdb redis.UniversalClient) *Broker {
	return &Broker{rdb: rdb, now: time.Now, memory: newMemory()}
}

// Client returns the underlying Redis client.
func (b *Broker) Client() redis.UniversalClient { return b.rdb }

// Ping checks the connection.
func (b *Broker) Ping(ctx context.Context) error {
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping broker: %w", err)
	}
	return nil
}

// LoadScripts loads every script into the server's cache, so the first claim does not pay for it.
func (b *Broker) LoadScripts(ctx context.Context) error {
	for _, s := range []*redis.Script{claimScript, startScript, progressScript, completeScript, failScript, releaseScript,
		renewScript, reapScript, pendingCountScript} {
		if err := s.Load(ctx, b.rdb).Err(); err != nil {
			return fmt.Errorf("load broker scripts: %w", err)
		}
	}
	return nil
}

// ISO formats a time as JavaScript's toISOString does, the format of every ISO field.
func ISO(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// Claim atomically claims the first pending job these capabilities match (PROTOCOL §2). It
// returns nil when nothing matched. One call does at most scanLimit units of work (see
// claim.lua); cursor is where the previous call stopped (0 at first), and the returned one is
// where the next call starts: non-zero means the call ran out of budget before it looked at
// the whole queue, so claim again at once; 0 means it reached the end, or claimed a job.
// An error the broker's Lua raised wraps ErrScript.
func (b *Broker) Claim(ctx context.Context, caps []byte, scanLimit int, cursor int64) (*job.Job, int64, error) {
	now, fp := b.now(), fingerprintOf(caps)
	forget, all := b.memory.take(fp)
	args := append([]any{caps, scanLimit, cursor, b.policy.Lease.Milliseconds(), int64(b.policy.AvoidLastWorker.Seconds()),
		fp, ISO(now), now.UnixMilli(), b.routingArg(now)}, forgetArgs(forget, all)...)
	res, err := claimScript.Run(ctx, b.rdb, nil, args...).Slice()
	if err != nil {
		b.memory.lost(fp)
		return nil, cursor, classify("claim", err)
	}
	if len(res) != 2 {
		return nil, cursor, fmt.Errorf("claim: unexpected reply %v", res)
	}
	next, _ := res[1].(int64)
	raw, _ := res[0].(string)
	if raw == "" {
		return nil, next, nil
	}
	if limit := b.policy.MaxJobBytes; limit > 0 && len(raw) > limit {
		j, err := oversize(raw, limit)
		return j, next, err
	}
	var claimed struct {
		JobID string            `json:"jobId"`
		Job   map[string]string `json:"job"`
	}
	if err := json.Unmarshal([]byte(raw), &claimed); err != nil {
		return nil, next, fmt.Errorf("claim: decode claimed job: %w", err)
	}
	if claimed.Job["id"] == "" {
		claimed.Job["id"] = claimed.JobID
	}
	return job.FromHash(claimed.Job), next, nil
}

// ErrNotOwner reports that a job is no longer this worker's: cancelled, or given to another.
var ErrNotOwner = errors.New("job is no longer held by this worker (cancelled or reassigned)")

func owned(n int64, err error, op, id string) error {
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, id, err)
	}
	if n == 0 {
		return fmt.Errorf("%s %s: %w", op, id, ErrNotOwner)
	}
	return nil
}

// Start moves a claimed job to in_progress.
func (b *Broker) Start(ctx context.Context, j *job.Job, workerID string) error {
	n, err := startScript.Run(ctx, b.rdb, nil, j.ID, workerID, ISO(b.now())).Int64()
	return owned(n, err, "start", j.ID)
}

// Progress records and publishes a progress report.
func (b *Broker) Progress(ctx context.Context, j *job.Job, workerID string, p job.Progress) error {
	now := b.now()
	pct := clampPercent(p.Percent)
	msg, _ := json.Marshal(map[string]any{
		"job_id": j.ID, "worker_id": workerID, "progress": pct, "status": "in_progress",
		"message": p.Message, "current_step": currentStep(p), "total_steps": p.TotalSteps,
		"estimated_completion": "", "timestamp": now.UnixMilli(),
	})
	n, err := progressScript.Run(ctx, b.rdb, nil, j.ID, workerID, strconv.FormatFloat(pct, 'f', -1, 64),
		p.Message, ISO(now), msg).Int64()
	return owned(n, err, "progress", j.ID)
}

func clampPercent(p float64) float64 {
	if p < 0 {
		return 0
	}
	if p > 100 {
		return 100
	}
	return float64(int(p*10+0.5)) / 10
}

// currentStep is the current_step of a progress message: the step number, else the stage's
// name, else an empty string, as emp's worker sends it.
func currentStep(p job.Progress) any {
	if p.Step > 0 {
		return p.Step
	}
	return p.StepName
}

// workflowFields copies the workflow fields the API sets, as complete_job and job_failed carry them.
func workflowFields(j *job.Job, m map[string]any) {
	f := j.Fields
	if v := f["workflow_id"]; v != "" {
		m["workflow_id"] = v
	}
	for _, k := range []string{"current_step", "total_steps", "workflow_priority", "workflow_datetime"} {
		if n, err := strconv.ParseInt(f[k], 10, 64); err == nil {
			m[k] = n
		}
	}
}

func workerStatusMsg(workerID, old, new string, now time.Time) []byte {
	b, _ := json.Marshal(map[string]any{
		"worker_id": workerID, "old_status": old, "new_status": new, "current_job_id": "", "timestamp": now.UnixMilli(),
	})
	return b
}

// Complete records a successful result (PROTOCOL §3) and returns the worker to idle.
func (b *Broker) Complete(ctx context.Context, j *job.Job, workerID string, result job.Result) error {
	now := b.now()
	resultJSON, err := json.Marshal(result)
	if err != nil {
		return fmt.Errorf("complete %s: encode result: %w", j.ID, err)
	}
	stored, _ := json.Marshal(map[string]any{"success": true, "data": json.RawMessage(resultJSON), "completed_at": ISO(now)})
	m := map[string]any{
		"job_id": j.ID, "worker_id": workerID, "progress": 100, "status": "completed",
		"message": "Job completed successfully", "result": json.RawMessage(resultJSON), "timestamp": now.UnixMilli(),
	}
	workflowFields(j, m)
	msg, _ := json.Marshal(m)
	key, attestation, err := b.completionAttestation(j, workerID, resultJSON, now)
	if err != nil {
		return fmt.Errorf("complete %s: %w", j.ID, err)
	}
	n, err := completeScript.Run(ctx, b.rdb, nil, j.ID, workerID, ISO(now), stored, msg,
		workerStatusMsg(workerID, "busy", "idle", now), key, attestation,
		now.UnixMilli(), StatsKey(j.Fields["service_required"], j.Fields["requirements"]),
		MaxDurationStats, int64(DurationStatsTTL.Seconds())).Int64()
	if err == nil && n == 1 {
		b.warm.ran(j.Fields["service_required"], now)
	}
	return owned(n, err, "complete", j.ID)
}

// Outcome says what a failure did to the job.
type Outcome int

const (
	Retried Outcome = iota + 1 // back in jobs:pending
	Failed                     // permanently failed
)

func (o Outcome) String() string {
	if o == Retried {
		return "retried"
	}
	return "failed"
}

// Fail records a failed attempt. A retryable failure with retries left puts the job back in
// jobs:pending at its original place in line (see RetryScore); otherwise it fails permanently.
func (b *Broker) Fail(ctx context.Context, j *job.Job, workerID, reason string, retryable bool) (Outcome, error) {
	now := b.now()
	retries := j.RetryCount + 1
	outcome := Failed
	if retryable && retries < j.MaxRetries {
		outcome = Retried
	}
	stored, _ := json.Marshal(map[string]any{"error": reason, "failed_at": ISO(now), "retry_count": retries})
	m := map[string]any{
		"job_id": j.ID, "worker_id": workerID, "status": "failed", "error": reason, "failed_at": ISO(now),
		"retry_count": retries, "can_retry": false, "timestamp": now.UnixMilli(),
	}
	workflowFields(j, m)
	failedMsg, _ := json.Marshal(m)
	requeued, _ := json.Marshal(map[string]any{
		"job_id": j.ID, "service_required": j.Service, "retry_count": retries, "reason": "retry", "timestamp": now.UnixMilli(),
	})
	mode := "fail"
	if outcome == Retried {
		mode = "retry"
	}
	attestations, err := b.failureAttestations(j, workerID, reason, retries, outcome == Retried, now)
	if err != nil {
		return 0, fmt.Errorf("fail %s: %w", j.ID, err)
	}
	args := []any{j.ID, workerID, ISO(now), reason, mode, retries,
		RetryScore(j, now), stored, failedMsg, requeued, workerStatusMsg(workerID, "busy", "idle", now),
		int64(b.policy.backoff(retries).Seconds())}
	for _, a := range attestations {
		args = append(args, a)
	}
	n, err := failScript.Run(ctx, b.rdb, nil, args...).Int64()
	if err := owned(n, err, "fail", j.ID); err != nil {
		return 0, err
	}
	return outcome, nil
}

// RetryScore is the score a job re-enters jobs:pending with. We deliberately use the API's
// formula on the job's own fields, so a retried job keeps its original place in line: ahead of
// newer jobs of the same priority, behind higher priorities. The old worker's formula
// (P*1e6 + MAX_SAFE_INTEGER - T) ranked every retry below all new jobs with P ≥ 10, which can
// starve a retried job indefinitely under load (emp-reference §1.4).
func RetryScore(j *job.Job, now time.Time) string {
	return strconv.FormatFloat(job.Score(j.Fields, now), 'f', -1, 64)
}

// Release gives a job back to jobs:pending without counting an attempt: the machine stopped
// it (drain timeout, shutdown), not the job.
func (b *Broker) Release(ctx context.Context, j *job.Job, workerID string) error {
	now := b.now()
	requeued, _ := json.Marshal(map[string]any{
		"job_id": j.ID, "service_required": j.Service, "retry_count": j.RetryCount, "reason": "released", "timestamp": now.UnixMilli(),
	})
	n, err := releaseScript.Run(ctx, b.rdb, nil, j.ID, workerID, ISO(now), RetryScore(j, now), requeued,
		workerStatusMsg(workerID, "busy", "idle", now)).Int64()
	return owned(n, err, "release", j.ID)
}
