// Package worker runs worker slots: each slot claims one job at a time from the broker, runs it
// through its connector, and records the outcome. A slot claims again at once after a job,
// wakes on job_submitted when idle, and polls slowly only as a fallback.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/metrics"
	"github.com/emp-job-queue/machine/core/state"
)

// Broker is the part of the broker a slot uses.
type Broker interface {
	Claim(ctx context.Context, caps []byte, scanLimit int, cursor int64) (*job.Job, int64, error)
	Start(ctx context.Context, j *job.Job, workerID string) error
	Progress(ctx context.Context, j *job.Job, workerID string, p job.Progress) error
	Complete(ctx context.Context, j *job.Job, workerID string, r job.Result) error
	Fail(ctx context.Context, j *job.Job, workerID, reason string, retryable bool) (broker.Outcome, error)
	Release(ctx context.Context, j *job.Job, workerID string) error
}

// Accounting keeps a job attempt's resource record from its claim to its final write
// (core/accounting implements it).
type Accounting interface {
	// Claimed opens the record of a job just claimed; the returned context carries it to the
	// connector.
	Claimed(ctx context.Context, j *job.Job) context.Context
	// Finished closes the record before the final write and adds it to a successful result as
	// metadata.resources. Calls after the first do nothing.
	Finished(ctx context.Context, j *job.Job, res *job.Result)
}

// Params builds a Slot. Every field is immutable after New.
type Params struct {
	ID        string // worker id, ${MACHINE_ID}-worker-${connector}-${i}
	Connector string
	Caps      []byte // encoded capabilities
	Conn      connectors.Connector
	Broker    Broker
	Store     *state.Store
	Metrics   *metrics.Metrics
	Wake      <-chan struct{} // a token per claimable job for this slot's services
	// Waker, when set, is told when the slot waits for work (it then gives Wake out; see
	// Waker), so that wake-ups go only to slots that wait.
	Waker *Waker
	// PollTicket, when set, says whether the fallback poll may claim now (one slot of each
	// capability set polls each interval, fleet-wide: broker.PollTicket). Nil: always.
	PollTicket func(ctx context.Context) bool
	Gate       func() bool // nil, or false while the slot must not claim (its GPU is out of service)
	// Track registers a running job's cancel function (for cancel_job) and returns its removal.
	Track func(jobID string, cancel context.CancelCauseFunc) (untrack func())
	// Writes bounds the retries of a job's final write while the broker is unreachable: they go
	// on until it ends (the machine's shutdown deadline). Nil: until the write lands.
	Writes       context.Context
	PollInterval time.Duration
	ScanLimit    int
	JobTimeout   time.Duration
	Log          *slog.Logger
	Accounting   Accounting // nil: no resource records
}

// Slot is one worker slot.
type Slot struct {
	p Params
	// progressEvery spaces progress writes to the broker (see progressGate); the store gets
	// every report.
	progressEvery time.Duration
}

// New returns a slot; Run starts it.
func New(p Params) *Slot {
	if p.Log == nil {
		p.Log = slog.New(slog.DiscardHandler)
	}
	if p.PollInterval <= 0 {
		p.PollInterval = 2 * time.Second
	}
	if p.JobTimeout <= 0 {
		p.JobTimeout = 30 * time.Minute
	}
	p.Log = p.Log.With("slot", p.ID)
	if p.Writes == nil {
		p.Writes = context.Background()
	}
	return &Slot{p: p, progressEvery: 100 * time.Millisecond}
}

// ErrCancelled is the cause of a job's context when the API cancelled the job.
var ErrCancelled = errors.New("job cancelled by the API")

// Run claims and runs jobs until claimCtx ends, then returns once the job in hand is settled.
// jobCtx ending cancels the job in hand, which then goes back to the queue without using up a
// retry (the drain timeout ran out, or the operator insisted on stopping).
func (s *Slot) Run(claimCtx, jobCtx context.Context) {
	defer s.p.Store.SlotStopped(s.p.ID)
	var cursor int64
	failures := 0
	defer func() { s.claimWorks(failures) }()
	poll := time.NewTimer(s.p.PollInterval)
	defer poll.Stop()
	for claimCtx.Err() == nil {
		if s.p.Gate != nil && !s.p.Gate() {
			s.sleep(claimCtx, min(s.p.PollInterval, time.Second))
			continue
		}
		j, next, err := s.claim(jobCtx, cursor)
		if err != nil {
			failures++
			s.claimFailed(failures, err)
			s.sleep(claimCtx, min(time.Duration(failures)*100*time.Millisecond, time.Second))
			continue
		}
		if failures > 0 {
			s.p.Log.Info("claiming again: the broker answers", "after_attempts", failures)
			s.claimWorks(failures)
			failures = 0
		}
		cursor = next
		if j != nil {
			s.run(jobCtx, j)
			continue
		}
		if next != 0 {
			continue // the scan stopped on its work budget: look further along the queue at once
		}
		if !poll.Stop() {
			select {
			case <-poll.C:
			default:
			}
		}
		poll.Reset(s.p.PollInterval)
		s.wait(claimCtx, poll)
	}
}

// wait blocks until a wake-up, or a poll this slot may run, or claimCtx ends.
func (s *Slot) wait(claimCtx context.Context, poll *time.Timer) {
	if w := s.p.Waker; w != nil {
		w.waiting(s.p.Connector, true)
		defer w.waiting(s.p.Connector, false)
	}
	for {
		select {
		case <-claimCtx.Done():
			return
		case <-s.p.Wake:
			return
		case <-poll.C:
			if s.p.PollTicket == nil || s.p.PollTicket(claimCtx) {
				return
			}
			poll.Reset(s.p.PollInterval)
		}
	}
}

// claim runs one claim. It is not cancelled with claimCtx: a claim cut off mid-flight could
// take a job without the slot knowing it.
func (s *Slot) claim(jobCtx context.Context, cursor int64) (*job.Job, int64, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(jobCtx), 10*time.Second)
	defer cancel()
	start := time.Now()
	j, next, err := s.p.Broker.Claim(ctx, s.p.Caps, s.p.ScanLimit, cursor)
	if s.p.Metrics != nil {
		s.p.Metrics.ClaimTime.Observe(time.Since(start).Seconds())
	}
	return j, next, err
}

// claimFailuresToReport is how many claims in a row must fail before the slot reports that it
// cannot claim (/ready, machine_claim_failing_slots).
const claimFailuresToReport = 3

// claimFailed logs and reports a failed claim; a script error (the broker answers but the claim
// fails inside Redis) is told apart from a broker that does not answer.
func (s *Slot) claimFailed(failures int, err error) {
	kind, what := "broker", "the broker did not answer; retrying"
	if errors.Is(err, broker.ErrScript) {
		kind, what = "script", "the claim script fails inside Redis (the broker answers: a bad key or script is at fault); retrying"
	}
	if m := s.p.Metrics; m != nil {
		m.ClaimErrors.WithLabelValues(kind).Inc()
		if failures == claimFailuresToReport {
			m.ClaimFailing.Inc()
		}
	}
	if failures == 1 || failures%50 == 0 {
		s.p.Log.Warn("cannot claim jobs: "+what, "err", err, "attempts", failures)
	}
	if failures >= claimFailuresToReport {
		s.p.Store.ClaimFailing(s.p.ID, err.Error())
	}
}

// claimWorks clears what claimFailed reported.
func (s *Slot) claimWorks(failures int) {
	if failures < claimFailuresToReport {
		return
	}
	if m := s.p.Metrics; m != nil {
		m.ClaimFailing.Dec()
	}
	s.p.Store.ClaimFailing(s.p.ID, "")
}

func (s *Slot) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// run takes one claimed job to its end.
func (s *Slot) run(jobCtx context.Context, j *job.Job) {
	start := time.Now()
	if a := s.p.Accounting; a != nil {
		jobCtx = a.Claimed(jobCtx, j)
		defer a.Finished(jobCtx, j, nil) // a job that never ran still closes its record
	}
	log := s.p.Log.With("job_id", j.ID, "service", j.Service, "attempt", j.RetryCount+1)
	s.p.Store.JobClaimed(s.p.ID, j.ID, j.Service)
	s.p.Store.JobInfo(s.p.ID, state.InfoOf(j))
	if m := s.p.Metrics; m != nil {
		m.SlotsBusy.WithLabelValues(s.p.Connector).Inc()
		defer m.SlotsBusy.WithLabelValues(s.p.Connector).Dec()
	}
	if err := s.write(func(ctx context.Context) error { return s.p.Broker.Start(ctx, j, s.p.ID) }); err != nil {
		if errors.Is(err, broker.ErrNotOwner) {
			log.Info("job was cancelled before it started; skipping it")
			s.ended(j, start, job.Cancelled, "")
			return
		}
		log.Warn("could not mark the job in_progress; running it anyway", "err", err)
	}

	runCtx, cancel := context.WithCancelCause(jobCtx)
	defer cancel(nil)
	if s.p.Track != nil {
		defer s.p.Track(j.ID, cancel)()
	}
	res, runErr := s.execute(runCtx, j, log)
	if a := s.p.Accounting; a != nil {
		a.Finished(jobCtx, j, &res)
	}
	switch {
	case errors.Is(context.Cause(runCtx), ErrCancelled):
		// The API already marked the job failed; only this worker's own records are cleared.
		err := s.write(func(ctx context.Context) error {
			_, err := s.p.Broker.Fail(ctx, j, s.p.ID, "Job cancelled by user", false)
			return err
		})
		if errors.Is(err, broker.ErrNotOwner) {
			err = nil
		}
		log.Info("job cancelled by the API; its connector call was aborted")
		s.settle(j, start, log, job.Cancelled, "cancelled", err)
	case runErr == nil && res.Success:
		err := s.write(func(ctx context.Context) error { return s.p.Broker.Complete(ctx, j, s.p.ID, res) })
		s.settle(j, start, log, job.Completed, "", err)
	case jobCtx.Err() != nil:
		err := s.write(func(ctx context.Context) error { return s.p.Broker.Release(ctx, j, s.p.ID) })
		s.settle(j, start, log, job.Released, "its slot stopped (drain timeout) before the job finished", err)
	default:
		reason, retryable := failure(j, res, runErr, s.p.JobTimeout)
		var outcome broker.Outcome
		err := s.write(func(ctx context.Context) error {
			var err error
			outcome, err = s.p.Broker.Fail(ctx, j, s.p.ID, reason, retryable)
			return err
		})
		s.settle(j, start, log, failureOutcome(outcome), reason, err)
	}
}

// execute runs the connector with the job timeout, turning a panic into a failure.
func (s *Slot) execute(jobCtx context.Context, j *job.Job, log *slog.Logger) (res job.Result, err error) {
	if j.Refused != nil {
		return job.Result{}, j.Refused
	}
	if len(j.Payload) > 0 && !json.Valid(j.Payload) {
		return job.Result{}, job.Permanent(fmt.Errorf("payload of job %s is not valid JSON; the submitter must send a JSON object", j.ID))
	}
	ctx, cancel := context.WithTimeout(jobCtx, s.p.JobTimeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			log.Error("connector panicked", "panic", r)
			res, err = job.Result{}, fmt.Errorf("connector %s crashed on this job: %v", s.p.Connector, r)
		}
	}()
	gate := newProgressGate(s.progressEvery, func(p job.Progress) {
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
		defer wcancel()
		if err := s.p.Broker.Progress(wctx, j, s.p.ID, p); err != nil && !errors.Is(err, broker.ErrNotOwner) {
			log.Debug("progress not recorded", "err", err)
		}
	})
	defer gate.close()
	report := func(p job.Progress) {
		s.p.Store.JobProgress(s.p.ID, p.Percent, p.Message)
		gate.report(p)
	}
	res, err = s.p.Conn.Run(ctx, j, report)
	gate.close() // no progress write may follow the outcome; a connector may still hold report
	if err == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && jobCtx.Err() == nil {
		err = ctx.Err()
	}
	return res, err
}

// failure turns a connector's outcome into the text recorded on the job and whether a retry
// may help.
func failure(j *job.Job, res job.Result, err error, timeout time.Duration) (string, bool) {
	switch {
	case err == nil:
		if res.Error == "" {
			return fmt.Sprintf("connector reported job %s unsuccessful without saying why", j.ID), true
		}
		return res.Error, true
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("job %s ran longer than the %s job timeout (JOB_TIMEOUT_MINUTES)", j.ID, timeout), true
	default:
		return err.Error(), !job.IsPermanent(err)
	}
}

// write retries a final write while the broker is unreachable, so a finished job's outcome is
// kept through an outage and lands when Redis is back; it gives up only when the machine's
// shutdown deadline passes. A job that is no longer ours is not retried.
func (s *Slot) write(op func(ctx context.Context) error) error {
	delay := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(s.p.Writes), 5*time.Second)
		err := op(ctx)
		cancel()
		if err == nil || errors.Is(err, broker.ErrNotOwner) {
			return err
		}
		if attempt == 1 {
			s.p.Log.Warn("the broker did not take a job's outcome; holding it and retrying until it does", "err", err)
		}
		select {
		case <-s.p.Writes.Done():
			return fmt.Errorf("gave up at shutdown with the broker unreachable: %w", err)
		case <-time.After(delay):
		}
		delay = min(delay*2, time.Second)
	}
}

func (s *Slot) settle(j *job.Job, start time.Time, log *slog.Logger, outcome job.Outcome, reason string, err error) {
	switch {
	case errors.Is(err, broker.ErrNotOwner):
		log.Info("job was cancelled or reassigned while it ran; its result is dropped")
		outcome = job.Cancelled
	case outcome == job.Cancelled:
	case err != nil:
		log.Error("could not record the job's outcome; it stays assigned to this worker until it is recovered",
			"outcome", outcome, "err", err)
		outcome = job.Unrecorded
	case outcome == job.Completed:
		log.Info("job completed", "duration_ms", time.Since(start).Milliseconds())
	case outcome == job.Released:
		log.Warn("job returned to the queue without using a retry", "reason", reason)
	default:
		log.Warn("job attempt failed", "outcome", outcome, "error", reason)
	}
	s.ended(j, start, outcome, reason)
}

func (s *Slot) ended(j *job.Job, start time.Time, outcome job.Outcome, reason string) {
	s.p.Store.JobEnded(s.p.ID, outcome, reason)
	if m := s.p.Metrics; m != nil {
		m.Jobs.WithLabelValues(s.p.Connector, string(outcome)).Inc()
		m.JobDuration.WithLabelValues(s.p.Connector).Observe(time.Since(start).Seconds())
	}
}

// failureOutcome names the broker's verdict on a failed attempt.
func failureOutcome(o broker.Outcome) job.Outcome {
	if o == broker.Retried {
		return job.Retried
	}
	return job.Failed
}
