package worker_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/core/worker"
	"github.com/emp-job-queue/machine/internal/redistest"
)

type accountKey struct{}

// recordingAccounting notes the calls a slot makes and adds a marker to results.
type recordingAccounting struct {
	mu    sync.Mutex
	calls []string
}

func (a *recordingAccounting) note(s string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, s)
}

func (a *recordingAccounting) Claimed(ctx context.Context, j *job.Job) context.Context {
	a.note("claimed " + j.ID)
	return context.WithValue(ctx, accountKey{}, j.ID)
}

func (a *recordingAccounting) Finished(ctx context.Context, j *job.Job, res *job.Result) {
	if ctx.Value(accountKey{}) != j.ID {
		a.note("finished without the claim's context")
	}
	if res == nil {
		a.note("finished again")
		return
	}
	a.note("finished " + j.ID)
	res.Metadata = map[string]any{"resources": map[string]any{"run_ms": 7}}
}

// The slot opens the record at claim, hands its context to the connector, and closes it before
// the final write, so what it adds to the result reaches jobs:completed.
func TestAccountingWrapsTheJob(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	defer rdb.Close()
	b := broker.New(rdb)
	ctx := context.Background()
	id, err := b.Submit(ctx, broker.JobSpec{Service: "test", Payload: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	caps, _ := broker.Capabilities{WorkerID: "w-0", Services: []string{"test"}}.Encode()
	acct := &recordingAccounting{}
	var sawRecord bool
	slot := worker.New(worker.Params{ID: "w-0", Connector: "test", Caps: caps, Broker: b, Accounting: acct,
		Store: state.New("m", "", []state.Slot{{ID: "w-0"}}), Wake: make(chan struct{}), PollInterval: 10 * time.Millisecond, ScanLimit: 100,
		Conn: connFunc(func(ctx context.Context, j *job.Job, _ job.ProgressFunc) (job.Result, error) {
			sawRecord = ctx.Value(accountKey{}) == j.ID
			return job.Result{Success: true, Data: map[string]any{"ok": true}}, nil
		})})
	claimCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { slot.Run(claimCtx, ctx); close(done) }()
	deadline := time.Now().Add(20 * time.Second)
	for rdb.HGet(ctx, "job:"+id, "status").Val() != "completed" {
		if time.Now().After(deadline) {
			t.Fatal("job never completed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	<-done
	stored := rdb.HGet(ctx, "jobs:completed", id).Val()
	if !sawRecord || !strings.Contains(stored, `"metadata":{"resources":{"run_ms":7}}`) || !strings.Contains(stored, `"data":{"ok":true}`) {
		t.Errorf("connector saw the record: %v; jobs:completed = %s", sawRecord, stored)
	}
	want := []string{"claimed " + id, "finished " + id, "finished again"}
	if strings.Join(acct.calls, "|") != strings.Join(want, "|") {
		t.Errorf("accounting calls %q, want %q", acct.calls, want)
	}
}
