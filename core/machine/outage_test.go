package machine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/internal/redistest"
)

func TestJobOfADeadMachineRunsElsewhere(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	defer rdb.Close()
	ctx := context.Background()
	b := broker.New(rdb)
	b.SetPolicy(broker.Policy{Lease: time.Second})
	// The dead machine: it claimed and started the job, then vanished.
	id, _ := b.Submit(ctx, broker.JobSpec{Service: "simulation", Payload: json.RawMessage(`{"duration_ms":10}`)})
	caps, _ := broker.Capabilities{WorkerID: "dead-worker-simulation-0", Services: []string{"simulation"}}.Encode()
	j, _, err := b.Claim(ctx, caps, 100, 0)
	if err != nil || j == nil {
		t.Fatal(j, err)
	}
	_ = b.Start(ctx, j, "dead-worker-simulation-0")
	// A live machine on the same broker, leases of 1 s.
	h := startWithRedis(t, srv.URL, map[string]string{"WORKER_CONNECTORS": "simulation", "MACHINE_LEASE_SECONDS": "1",
		"WORKER_POLL_INTERVAL_MS": "200"})
	h.waitFor("the dead machine's job to complete here", func() bool { return h.status(id) == "completed" })
	jh := rdb.HGetAll(ctx, "job:"+id).Val()
	if jh["retry_count"] != "0" || jh["lease_expiries"] != "1" || !strings.HasPrefix(jh["worker_id"], "test-box-worker-") {
		t.Errorf("job after recovery: %v", jh)
	}
}

func TestCancelAbortsTheRunningJob(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation"})
	ctx := context.Background()
	id := h.submit("simulation", `{"duration_ms":60000,"steps":600}`)
	h.waitFor("the job to run", func() bool { return h.status(id) == "in_progress" })
	worker := h.rdb.HGet(ctx, "job:"+id, "worker_id").Val()
	// The API's cancel (emp-reference §1.6).
	h.rdb.HSet(ctx, "job:"+id, "status", "failed", "error", "Job cancelled by user")
	h.rdb.HDel(ctx, "jobs:active:"+worker, id)
	h.rdb.Publish(ctx, "cancel_job", fmt.Sprintf(`{"job_id":%q,"worker_id":%q,"reason":"Job cancelled by user"}`, id, worker))
	h.waitFor("the slot to be free again", func() bool {
		for _, s := range h.m.Store().Snapshot().Slots {
			if s.JobID == id {
				return false
			}
		}
		return true
	})
	jh := h.rdb.HGetAll(ctx, "job:"+id).Val()
	if jh["status"] != "failed" || jh["error"] != "Job cancelled by user" || h.rdb.ZScore(ctx, "jobs:pending", id).Err() == nil {
		t.Errorf("cancelled job resurrected: %v", jh)
	}
	if h.rdb.HGet(ctx, "worker:"+worker, "status").Val() != "idle" {
		t.Error("worker not idle after the cancellation")
	}
}

func TestRedisOutageMidJob(t *testing.T) {
	srv := redistest.Start(t)
	h := startWithRedis(t, srv.URL, map[string]string{"WORKER_CONNECTORS": "simulation:1", "MACHINE_LEASE_SECONDS": "30",
		"WORKER_POLL_INTERVAL_MS": "500"})
	id := h.submit("simulation", `{"duration_ms":1500,"steps":3}`)
	h.waitFor("the job to run", func() bool { return h.status(id) == "in_progress" })
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // the job finishes while Redis is gone
	if err := srv.Thaw(); err != nil {
		t.Fatal(err)
	}
	h.waitFor("the held outcome to land", func() bool { return h.status(id) == "completed" })
	thawed := time.Now()
	next := h.submit("simulation", `{"duration_ms":10}`)
	h.waitFor("a claim after the outage", func() bool { return h.status(next) == "completed" })
	if d := time.Since(thawed); d > 10*time.Second {
		t.Errorf("claiming resumed %s after Redis came back", d)
	}
}

func TestShutdownWhileRedisIsDown(t *testing.T) {
	srv := redistest.Start(t)
	h := startWithRedis(t, srv.URL, map[string]string{"WORKER_CONNECTORS": "simulation:1", "MACHINE_DRAIN_TIMEOUT": "1s"})
	id := h.submit("simulation", `{"duration_ms":60000,"steps":60}`)
	h.waitFor("the job to run", func() bool { return h.status(id) == "in_progress" })
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	defer srv.Thaw()
	start := time.Now()
	h.cancel()
	select {
	case <-h.done:
		h.done <- nil
	case <-time.After(60 * time.Second):
		t.Fatal("shutdown hung with Redis down")
	}
	t.Logf("shutdown with Redis down took %s", time.Since(start).Round(time.Millisecond))
}

// The whole ComfyUI path: the machine installs "ComfyUI" from a repository (here a local one
// whose main.py hands over to the in-repo fake ComfyUI server), creates its venv, supervises one
// instance on the GPU's port with the real command line, gates the slot on its readiness, and
// runs a workflow through it.
// OpenAI jobs through the machine, against the in-repo fake: text and an image saved as an
// asset; the key appears nowhere the operator looks.
// The browser connector end to end: the machine finds Chromium, supervises it as a service,
// gates the slot on its DevTools answering, and renders a job.
