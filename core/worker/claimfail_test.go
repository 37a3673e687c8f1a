package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/metrics"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/core/worker"
	"github.com/emp-job-queue/machine/internal/redistest"
)

// A slot whose claims keep failing inside Redis says so (the store, hence /ready, and the
// metrics, as script errors), and stops saying so once it claims again.
func TestRepeatedClaimFailuresAreReported(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	defer rdb.Close()
	b := broker.New(rdb)
	ctx := context.Background()
	rdb.Set(ctx, broker.KeyPending, "not a sorted set", 0) // every claim fails inside Redis
	caps, _ := broker.Capabilities{WorkerID: "w-0", Services: []string{"test"}}.Encode()
	store := state.New("m", "", []state.Slot{{ID: "w-0"}})
	m := metrics.New()
	slot := worker.New(worker.Params{ID: "w-0", Connector: "test", Caps: caps, Broker: b, Store: store, Metrics: m,
		Conn: connFunc(func(context.Context, *job.Job, job.ProgressFunc) (job.Result, error) {
			return job.Result{Success: true}, nil
		}),
		Wake: make(chan struct{}), PollInterval: 10 * time.Millisecond, ScanLimit: 100})
	claimCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { slot.Run(claimCtx, ctx); close(done) }()
	defer func() { stop(); <-done }()

	waitFor(t, func() bool { return store.Snapshot().ClaimTrouble() != "" }, "the slot never reported that it cannot claim")
	if trouble := store.Snapshot().ClaimTrouble(); !strings.Contains(trouble, "1 of 1 slots cannot claim jobs; w-0:") ||
		!strings.Contains(trouble, "WRONGTYPE") {
		t.Fatalf("claim trouble %q", trouble)
	}
	if value(m.ClaimFailing) != 1 || value(m.ClaimErrors.WithLabelValues("script")) < 3 ||
		value(m.ClaimErrors.WithLabelValues("broker")) != 0 {
		t.Fatalf("metrics: failing slots %v, script errors %v, broker errors %v", value(m.ClaimFailing),
			value(m.ClaimErrors.WithLabelValues("script")), value(m.ClaimErrors.WithLabelValues("broker")))
	}

	rdb.Del(ctx, broker.KeyPending)
	id, _ := b.Submit(ctx, broker.JobSpec{Service: "test"})
	waitFor(t, func() bool { return rdb.HGet(ctx, "job:"+id, "status").Val() == "completed" }, "the slot never claimed again")
	if trouble := store.Snapshot().ClaimTrouble(); trouble != "" || value(m.ClaimFailing) != 0 {
		t.Fatalf("after claiming again: trouble %q, failing slots %v", trouble, value(m.ClaimFailing))
	}
}

// waitFor waits for something asynchronous to happen (it never times anything).
func waitFor(t *testing.T, done func() bool, failure string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatal(failure)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// value reads a gauge or a counter.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}
