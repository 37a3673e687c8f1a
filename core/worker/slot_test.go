package worker_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/core/worker"
	"github.com/emp-job-queue/machine/internal/redistest"
)

type connFunc func(ctx context.Context, j *job.Job, progress job.ProgressFunc) (job.Result, error)

func (f connFunc) Run(ctx context.Context, j *job.Job, p job.ProgressFunc) (job.Result, error) {
	return f(ctx, j, p)
}

// runOne runs a slot with the connector until the submitted job has a final status.
func runOne(t testing.TB, conn connFunc, timeout time.Duration) map[string]string {
	t.Helper()
	srv := redistest.Start(t)
	rdb := srv.Client()
	defer rdb.Close()
	b := broker.New(rdb)
	ctx := context.Background()
	id, err := b.Submit(ctx, broker.JobSpec{Service: "test", Payload: json.RawMessage(`{}`), MaxRetries: new(1)})
	if err != nil {
		t.Fatal(err)
	}
	caps, _ := broker.Capabilities{WorkerID: "w-0", Services: []string{"test"}}.Encode()
	store := state.New("m", "", []state.Slot{{ID: "w-0"}})
	slot := worker.New(worker.Params{ID: "w-0", Connector: "test", Caps: caps, Conn: conn, Broker: b, Store: store,
		Wake: make(chan struct{}), PollInterval: 10 * time.Millisecond, ScanLimit: 100, JobTimeout: timeout})
	claimCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { slot.Run(claimCtx, ctx); close(done) }()
	defer func() { stop(); <-done }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		h := rdb.HGetAll(ctx, "job:"+id).Val()
		if h["status"] == "completed" || h["status"] == "failed" {
			h["progress_hash"] = rdb.HGet(ctx, "job:"+id+":progress", "progress").Val()
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("job never finished: %v", h)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConnectorPanicFailsTheJob(t *testing.T) {
	h := runOne(t, func(context.Context, *job.Job, job.ProgressFunc) (job.Result, error) { panic("nil map") }, time.Minute)
	if h["status"] != "failed" || !strings.Contains(h["error"], "crashed") || !strings.Contains(h["error"], "nil map") {
		t.Errorf("after a panic: %v", h)
	}
}

func TestJobTimeout(t *testing.T) {
	h := runOne(t, func(ctx context.Context, _ *job.Job, _ job.ProgressFunc) (job.Result, error) {
		<-ctx.Done()
		return job.Result{}, ctx.Err()
	}, 50*time.Millisecond)
	if h["status"] != "failed" || !strings.Contains(h["error"], "JOB_TIMEOUT_MINUTES") {
		t.Errorf("after a timeout: %v", h)
	}
}

func TestProgressOfLongJobsReachesTheBroker(t *testing.T) {
	h := runOne(t, func(ctx context.Context, _ *job.Job, p job.ProgressFunc) (job.Result, error) {
		for i := 1; i <= 4; i++ {
			time.Sleep(60 * time.Millisecond)
			p(job.Progress{Percent: float64(i) * 20, Message: "working"})
		}
		return job.Result{Success: true}, nil
	}, time.Minute)
	if h["status"] != "completed" || h["progress_hash"] == "" || h["progress_hash"] == "0" {
		t.Errorf("progress not recorded: %v", h)
	}
}

func TestUnsuccessfulResultIsAFailure(t *testing.T) {
	h := runOne(t, func(context.Context, *job.Job, job.ProgressFunc) (job.Result, error) {
		return job.Result{Success: false, Error: "upstream said no"}, nil
	}, time.Minute)
	if h["status"] != "failed" || h["error"] != "upstream said no" {
		t.Errorf("after an unsuccessful result: %v", h)
	}
}

// A slot whose gate is closed (service not ready, GPU out of service) claims nothing; it
// claims once the gate opens.
func TestClosedGateClaimsNothing(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	defer rdb.Close()
	b := broker.New(rdb)
	ctx := context.Background()
	id, _ := b.Submit(ctx, broker.JobSpec{Service: "test"})
	caps, _ := broker.Capabilities{WorkerID: "w-0", Services: []string{"test"}}.Encode()
	store := state.New("m", "", []state.Slot{{ID: "w-0"}})
	var open atomic.Bool
	slot := worker.New(worker.Params{ID: "w-0", Connector: "test", Caps: caps, Broker: b, Store: store,
		Conn: connFunc(func(context.Context, *job.Job, job.ProgressFunc) (job.Result, error) {
			return job.Result{Success: true}, nil
		}),
		Wake: make(chan struct{}), PollInterval: 10 * time.Millisecond, ScanLimit: 100, Gate: open.Load})
	claimCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { slot.Run(claimCtx, ctx); close(done) }()
	defer func() { stop(); <-done }()
	time.Sleep(300 * time.Millisecond) // thirty poll periods with the gate closed
	if st := rdb.HGet(ctx, "job:"+id, "status").Val(); st != "pending" {
		t.Fatalf("job %s while the gate was closed", st)
	}
	open.Store(true)
	deadline := time.Now().Add(10 * time.Second)
	for rdb.HGet(ctx, "job:"+id, "status").Val() != "completed" {
		if time.Now().After(deadline) {
			t.Fatal("job not run after the gate opened")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
