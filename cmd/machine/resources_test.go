package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/internal/redistest"
)

// A simulation job run by a machine process on simulated GPUs ends with its resource record in
// jobs:completed and in the complete_job message, with GPU-seconds and energy.
func TestJobResourcesFromAMachineProcess(t *testing.T) {
	srv := redistest.Start(t)
	env := map[string]string{"HUB_REDIS_URL": srv.URL, "MACHINE_ID": "box", "WORKER_CONNECTORS": "simulation:1",
		"GPU_MODE": "mock", "MACHINE_RUN_DIR": t.TempDir()}
	startMachine(t, env)
	rdb := srv.Client()
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub := rdb.Subscribe(ctx, "complete_job")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	id := submit(t, env, "--payload", `{"duration_ms":1500,"steps":3}`)[0]
	type resources struct {
		Metadata struct {
			Resources *job.Resources `json:"resources"`
		} `json:"metadata"`
	}
	var msg struct {
		JobID  string    `json:"job_id"`
		Result resources `json:"result"`
	}
	for msg.JobID != id {
		m, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("no complete_job for %s: %v", id, err)
		}
		if err := json.Unmarshal([]byte(m.Payload), &msg); err != nil {
			t.Fatal(err)
		}
	}
	var stored struct {
		Data resources `json:"data"`
	}
	if err := json.Unmarshal([]byte(rdb.HGet(ctx, "jobs:completed", id).Val()), &stored); err != nil {
		t.Fatal(err)
	}
	for where, r := range map[string]*job.Resources{"complete_job": msg.Result.Metadata.Resources, "jobs:completed": stored.Data.Metadata.Resources} {
		if r == nil || r.GPUSeconds == nil || *r.GPUSeconds <= 0 || r.GPUEnergyWh == nil || *r.GPUEnergyWh <= 0 || r.RunMS < 1500 {
			t.Errorf("%s: metadata.resources = %+v; want gpu_seconds > 0, gpu_energy_wh > 0 and the 1.5 s run", where, r)
		}
	}
}
