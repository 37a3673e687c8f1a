package oldworker_test

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/internal/oldworker"
	"github.com/emp-job-queue/machine/internal/redistest"
)

// The old worker claims a job the machine's broker wrote (as the API does) through emp's own
// findMatchingJob, and leaves it completed the way emp's worker does; a job for another
// service stays pending.
func TestOldWorkerClaimsThroughFindMatchingJob(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	defer rdb.Close()
	ctx := context.Background()
	code, err := os.ReadFile("testdata/findMatchingJob.lua")
	if err != nil {
		t.Fatal(err)
	}
	if err := oldworker.LoadFunction(ctx, rdb, string(code)); err != nil {
		t.Fatal(err)
	}
	b := broker.New(rdb)
	id, err := b.Submit(ctx, broker.JobSpec{Service: "simulation", Payload: json.RawMessage(`{"duration_ms":5}`)})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := b.Submit(ctx, broker.JobSpec{Service: "comfyui"})
	w := &oldworker.Worker{ID: "old-worker-simulation-0", MachineID: "old-box", Services: []string{"simulation"}, Poll: 5 * time.Millisecond}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx, rdb) }()
	deadline := time.Now().Add(30 * time.Second)
	for len(w.Completed()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	h := rdb.HGetAll(ctx, "job:"+id).Val()
	if h["status"] != "completed" || h["worker_id"] != w.ID || rdb.HExists(ctx, "jobs:completed", id).Val() != true {
		t.Errorf("job hash after the old worker: %v", h)
	}
	if s := rdb.HGet(ctx, "job:"+other, "status").Val(); s != "pending" {
		t.Errorf("the comfyui job is %q; the old worker took a job of another service", s)
	}
}
