package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/internal/redistest"
)

// These tests run the real binary against a real redis-server next to empAPI, which does with
// the machine's messages what the emp API does, and check what the API and its clients read.

func compatEnv(url string, t *testing.T, over map[string]string) map[string]string {
	env := map[string]string{"HUB_REDIS_URL": url, "MACHINE_ID": "compat", "MACHINE_RUN_DIR": t.TempDir(),
		"MACHINE_LOG_DIR": t.TempDir(), "MACHINE_GPU_COUNT": "0", "WORKER_CONNECTORS": "mock:2",
		// No periodic message in the middle of a test: only events and the shutdown speak.
		"MACHINE_STATUS_UPDATE_INTERVAL_SECONDS": "30"}
	for k, v := range over {
		env[k] = v
	}
	return env
}

func stopMachine(t *testing.T, p *proc) {
	t.Helper()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
		if err := p.Err(); err != nil {
			t.Fatalf("machine exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("machine did not exit within 30 s of SIGTERM")
	}
}

// 1. After a clean stop our workers are gone for the API: no worker:{id} hash (which the API
// would show as `unknown` at 0001-01-01 and keep for 120 s) and none in its snapshot; the
// shutdown message still tells what became of each worker, offline, with a real time.
func TestShutdownLeavesNoWorkerForTheAPI(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	defer rdb.Close()
	ctx := context.Background()
	api := startEmpAPI(t, rdb)
	env := compatEnv(srv.URL, t, nil)
	started := time.Now()
	p := startMachine(t, env)
	workers := []string{"compat-worker-mock-0", "compat-worker-mock-1"}

	id := submit(t, env, "--service", "mock", "--payload", `{"delay_ms":5}`)[0]
	waitUntil(t, "the job to complete", func() bool { return rdb.HGet(ctx, "job:"+id, "status").Val() == "completed" })
	ran := rdb.HGet(ctx, "job:"+id, "worker_id").Val()
	// Every message from before the stop is handled (the API wrote the worker idle again).
	waitUntil(t, "the API to see the worker idle", func() bool {
		return api.snapshotWorkers("compat")[ran] == "idle" && rdb.HGet(ctx, "worker:"+ran, "current_job_id").Val() == ""
	})
	for _, w := range workers {
		if rdb.Exists(ctx, "worker:"+w).Val() != 1 {
			t.Fatalf("worker:%s missing while the machine runs", w)
		}
	}

	stopMachine(t, p)
	var shutdown map[string]any
	waitUntil(t, "the API to handle the shutdown message", func() bool {
		msgs := api.messages()
		if len(msgs) == 0 {
			return false
		}
		shutdown = msgs[len(msgs)-1]
		return shutdown["update_type"] == "shutdown"
	})
	stopped := time.Now()

	// What the API keeps: nothing of our workers.
	for _, w := range workers {
		if h := rdb.HGetAll(ctx, "worker:"+w).Val(); len(h) > 0 {
			t.Errorf("worker:%s exists after the machine stopped (TTL %v): %v", w, rdb.TTL(ctx, "worker:"+w).Val(), h)
		}
		if rdb.Exists(ctx, "worker:"+w+":heartbeat").Val() != 0 {
			t.Errorf("worker:%s:heartbeat outlived the machine", w)
		}
	}
	if snap := api.snapshotWorkers("compat"); len(snap) != 0 {
		t.Errorf("the API's snapshot still shows workers %v", snap)
	}
	if st := rdb.HGet(ctx, "machine:compat:info", "status").Val(); st != "shutdown" {
		t.Errorf("machine:compat:info status = %q, want shutdown", st)
	}

	// What the shutdown message says.
	status := obj(shutdown["status"])
	if phase := obj(status["machine"])["phase"]; phase != "shutdown" {
		t.Errorf("shutdown message phase = %v", phase)
	}
	if sw := obj(obj(shutdown["structure"])["workers"]); len(sw) != 0 {
		t.Errorf("shutdown message lists workers %v in structure.workers: the API would write their hashes again", sw)
	}
	for _, w := range workers {
		ws := obj(obj(status["workers"])[w])
		at, _ := ws["last_activity"].(float64)
		if ws["status"] != "offline" || ws["is_connected"] != false || ws["current_job_id"] != nil ||
			at < float64(started.UnixMilli()) || at > float64(stopped.UnixMilli()) {
			t.Errorf("shutdown status of %s = %v; want offline, disconnected, no job, last_activity in [%d, %d]",
				w, ws, started.UnixMilli(), stopped.UnixMilli())
		}
	}
	// And no message ever carried a worker without a status or a real time.
	for _, msg := range api.messages() {
		for w, v := range obj(obj(msg["status"])["workers"]) {
			ws := obj(v)
			if at, _ := ws["last_activity"].(float64); ws["status"] == "" || at < float64(started.UnixMilli()) {
				t.Errorf("%s message: worker %s = %v", msg["update_type"], w, ws)
			}
		}
	}
}

// 2. Progress as emp's clients see it: a mock job gives exactly 10, 80, 100 (after the claim's
// 0, which the API drops), 100 before complete_job; a chatty simulation job is spaced out but
// its first step and its 100 always go out.
func TestProgressAsEmpClientsSeeIt(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	defer rdb.Close()
	api := startEmpAPI(t, rdb)
	env := compatEnv(srv.URL, t, map[string]string{"WORKER_CONNECTORS": "mock,simulation", "MACHINE_GPU_COUNT": "1"})
	startMachine(t, env)

	for _, delay := range []string{"0", "1", "50"} {
		id := submit(t, env, "--service", "mock", "--payload", `{"delay_ms":`+delay+`}`)[0]
		waitUntil(t, "the mock job to complete", func() bool {
			_, _, events := api.progress(id)
			return slices.Contains(events, "complete_job")
		})
		raw, relayed, events := api.progress(id)
		if !slices.Equal(raw, []float64{0, 10, 80, 100}) || !slices.Equal(relayed, []int{10, 80, 100}) {
			t.Errorf("delay_ms %s: update_job_progress %v, relayed %v; want 0,10,80,100 and 10,80,100", delay, raw, relayed)
		}
		if events[len(events)-1] != "complete_job" || events[len(events)-2] != "progress:100" {
			t.Errorf("delay_ms %s: events %v; want progress 100 right before complete_job", delay, events)
		}
	}

	const steps = 100
	id := submit(t, env, "--service", "simulation", "--payload", `{"duration_ms":0,"steps":100}`)[0]
	waitUntil(t, "the simulation job to complete", func() bool {
		_, _, events := api.progress(id)
		return slices.Contains(events, "complete_job")
	})
	_, relayed, events := api.progress(id)
	if len(relayed) < 2 || relayed[0] != 1 || relayed[len(relayed)-1] != 100 || !slices.IsSorted(relayed) {
		t.Errorf("simulation relayed %v; want the first step (1) first and 100 last, in order", relayed)
	}
	if len(relayed) >= steps {
		t.Errorf("simulation sent all %d steps: the 100 ms spacing did not hold back a chatty connector", len(relayed))
	}
	if events[len(events)-1] != "complete_job" || events[len(events)-2] != "progress:100" {
		t.Errorf("simulation events end %v; want progress 100 right before complete_job", events[max(0, len(events)-3):])
	}
}

// 3. Attestations as the API's GET /api/attestations finds them: a completed job of a workflow,
// and a job that failed for good.
func TestAttestationsTheAPIFinds(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	defer rdb.Close()
	ctx := context.Background()
	api := startEmpAPI(t, rdb)
	env := compatEnv(srv.URL, t, nil)
	startMachine(t, env)

	done := submit(t, env, "--service", "mock", "--workflow", "wf-1", "--payload", `{"delay_ms":1}`)[0]
	failed := submit(t, env, "--service", "mock", "--workflow", "wf-2", "--max-retries", "1", "--payload", `{"delay_ms":1,"should_fail":true}`)[0]
	waitUntil(t, "both jobs to end", func() bool {
		return rdb.HGet(ctx, "job:"+done, "status").Val() == "completed" && rdb.HGet(ctx, "job:"+failed, "status").Val() == "failed"
	})

	found := api.attestations(ctx, "wf-1")
	key := "worker:completion:job-id:wf-1:step-id:" + done + ":attempt:1"
	rec, ok := found[key]
	if !ok || len(found) != 1 {
		t.Fatalf("GET /api/attestations?workflow_id=wf-1 finds %v; want %s", found, key)
	}
	for k, v := range map[string]any{"job_id": done, "status": "completed", "retry_count": 0.0, "workflow_id": "wf-1",
		"machine_id": "compat", "worker_version": "dev", "worker_id": rdb.HGet(ctx, "job:"+done, "worker_id").Val()} {
		if rec[k] != v {
			t.Errorf("completion attestation %s = %v, want %v", k, rec[k], v)
		}
	}
	var result map[string]any
	if err := json.Unmarshal([]byte(rec["result"].(string)), &result); err != nil || result["success"] != true {
		t.Errorf("attestation result %v: %v", rec["result"], err)
	}
	if ttl := rdb.TTL(ctx, key).Val(); ttl >= 0 {
		t.Errorf("attestation expires in %v; emp's never do", ttl)
	}

	perm := "worker:failure:job-id:wf-2:step-id:" + failed + ":permanent"
	var fail map[string]any
	if err := json.Unmarshal([]byte(rdb.Get(ctx, perm).Val()), &fail); err != nil {
		t.Fatalf("%s: %v (keys %v)", perm, err, rdb.Keys(ctx, "*failure*").Val())
	}
	if fail["error_message"] != "Mock failure requested" || fail["attestation_type"] != "failure_permanent" || fail["will_retry"] != false {
		t.Errorf("failure attestation = %v", fail)
	}
	if old := api.attestations(ctx, "wf-2"); len(old) != 1 {
		t.Errorf("the API finds %v for wf-2; want the old completion key of the failed job", old)
	}
	if rdb.Exists(ctx, "workflow:failure:wf-2:permanent").Val() != 1 {
		t.Error("no workflow failure attestation")
	}
}

// 4. Shapes on a CPU-only machine: gpu_count as the monitor expects it, workers numbered as
// emp's aggregator numbers them, and the mock result with the old connector's fields.
func TestCPUOnlyShapesAndMockResult(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	defer rdb.Close()
	ctx := context.Background()
	api := startEmpAPI(t, rdb)
	env := compatEnv(srv.URL, t, nil)
	startMachine(t, env)

	var ready map[string]any
	waitUntil(t, "the machine_ready message", func() bool {
		for _, m := range api.messages() {
			if m["update_type"] == "machine_ready" {
				ready = m
			}
		}
		return ready != nil
	})
	structure := obj(ready["structure"])
	if structure["gpu_count"] != 1.0 {
		t.Errorf("structure.gpu_count = %v; the monitor's MachineCard prints a stray 0 for 0, emp sends at least 1", structure["gpu_count"])
	}
	for i, w := range []string{"compat-worker-mock-0", "compat-worker-mock-1"} {
		ws := obj(obj(structure["workers"])[w])
		if ws["gpu_id"] != float64(i) || ws["resource_binding"] == "gpu" {
			t.Errorf("structure.workers[%s] = %v; want gpu_id %d, not GPU-bound", w, ws, i)
		}
		// What the API made of it.
		var caps map[string]any
		_ = json.Unmarshal([]byte(rdb.HGet(ctx, "worker:"+w, "capabilities").Val()), &caps)
		if caps["gpu_id"] != float64(i) {
			t.Errorf("worker:%s capabilities = %v", w, caps)
		}
	}
	if gc := rdb.HGet(ctx, "machine:compat:info", "gpu_count").Val(); gc != "1" {
		t.Errorf("machine:compat:info gpu_count = %q", gc)
	}

	id := submit(t, env, "--service", "mock", "--payload", `{"delay_ms":1}`)[0]
	waitUntil(t, "the mock job to complete", func() bool { return rdb.HGet(ctx, "job:"+id, "status").Val() == "completed" })
	var stored struct {
		Success bool `json:"success"`
		Data    struct {
			Success bool           `json:"success"`
			Data    map[string]any `json:"data"`
			Time    *float64       `json:"processing_time_ms"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(rdb.HGet(ctx, "jobs:completed", id).Val()), &stored); err != nil {
		t.Fatal(err)
	}
	d := stored.Data.Data
	if !stored.Success || !stored.Data.Success || stored.Data.Time == nil || d["test_data"] != "Mock test successful" ||
		d["mock_url"] != "https://via.placeholder.com/512x512.png?text=Mock+Test+"+id || d["processing_time_ms"] == nil {
		t.Errorf("jobs:completed = %+v; want the old mock result", stored)
	}
	if len(d) != 3 {
		t.Errorf("mock data has fields %v; the old connector returns test_data, mock_url, processing_time_ms", d)
	}
	if strings.Contains(rdb.HGet(ctx, "jobs:completed", id).Val(), "mock://") {
		t.Error("the old mock:// URL is still there")
	}
}
