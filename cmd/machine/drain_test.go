package main

import (
	"context"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/internal/redistest"
)

// The Kubernetes preStop hook: `machine drain --wait` returns once the running job finished,
// so the SIGTERM that follows has nothing to return to the queue.
func TestDrainWaitsForTheJobInFlight(t *testing.T) {
	srv := redistest.Start(t)
	env := map[string]string{"HUB_REDIS_URL": srv.URL, "MACHINE_ID": "box", "WORKER_CONNECTORS": "simulation:1",
		"MACHINE_RUN_DIR": t.TempDir()}
	startMachine(t, env)
	id := submit(t, env, "--payload", `{"duration_ms":1500,"steps":3}`)[0]
	rdb := srv.Client()
	defer rdb.Close()
	ctx := context.Background()
	waitUntil(t, "the job to run", func() bool { return rdb.HGet(ctx, "job:"+id, "status").Val() == "in_progress" })

	out, err := command(env, "drain", "--wait", "--timeout", "60s").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "drained: no job in flight") {
		t.Fatalf("drain: %v\n%s", err, out)
	}
	if st := rdb.HGet(ctx, "job:"+id, "status").Val(); st != "completed" {
		t.Fatalf("job %s is %s after the drain returned; want completed", id, st)
	}
}

func TestDrainWithoutAMachine(t *testing.T) {
	out, err := command(map[string]string{"MACHINE_RUN_DIR": t.TempDir()}, "drain").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no running machine") {
		t.Fatalf("drain with no machine: %v\n%s", err, out)
	}
}
