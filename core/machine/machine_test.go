package machine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/state"
)

// start runs a machine against a real redis-server with the given environment on top of
// test defaults. The fallback poll is ten minutes, so any pickup the tests see came from the
// job_submitted wake-up.
func TestJobsFlowThroughEverySlot(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation:2,mock"})
	var ids []string
	for range 10 {
		ids = append(ids, h.submit("simulation", `{}`))
	}
	ids = append(ids, h.submit("mock", `{"delay_ms":5,"test_data":{"x":1}}`))
	for _, id := range ids {
		h.waitFor("job "+id+" to complete", func() bool { return h.status(id) == "completed" })
	}
	// A slot counts its job once the broker has it completed, so the count may trail by a moment.
	var snap state.Snapshot
	h.waitFor("the slots to count 11 completed jobs", func() bool {
		snap = h.m.Store().Snapshot()
		var done uint64
		for _, s := range snap.Slots {
			done += s.Completed
		}
		return done == 11
	})
	var stored struct {
		Data struct {
			Data map[string]any `json:"data"`
		} `json:"data"`
	}
	_ = json.Unmarshal([]byte(h.rdb.HGet(context.Background(), "jobs:completed", ids[10]).Val()), &stored)
	if td, _ := stored.Data.Data["test_data"].(map[string]any); td["x"] != 1.0 {
		t.Errorf("mock result lost its test_data: %+v", stored)
	}
	// Registered, heartbeating workers.
	for _, s := range snap.Slots {
		if h.rdb.Exists(context.Background(), "worker:"+s.ID+":heartbeat").Val() != 1 {
			t.Errorf("slot %s has no heartbeat key", s.ID)
		}
	}
}

func TestBadInputFailsClearlyAndLosesNothing(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation"})
	ctx := context.Background()
	unknown := h.submit("no-such-service", `{}`)
	// A payload that is not JSON at all, as a broken submitter could write it.
	bad := broker.NewID()
	h.rdb.HSet(ctx, "job:"+bad, map[string]any{"id": bad, "service_required": "simulation", "payload": "{not json",
		"priority": "50", "created_at": broker.ISO(time.Now()), "status": "pending", "retry_count": "0", "max_retries": "3"})
	h.rdb.ZAdd(ctx, "jobs:pending", redis.Z{Score: 6e16, Member: bad})
	h.rdb.Publish(ctx, "job_submitted", `{"job_id":"`+bad+`","service_required":"simulation"}`)
	wrongType := h.submit("simulation", `{"steps":"many"}`)
	good := h.submit("simulation", `{}`)

	for _, id := range []string{bad, wrongType} {
		msg, retries := h.failed(id)
		if !strings.Contains(msg, id) || !strings.Contains(msg, "payload") {
			t.Errorf("failure of %s does not say what is wrong: %q", id, msg)
		}
		if retries != 1 {
			t.Errorf("a bad payload was retried: retry_count %v", retries)
		}
		if h.rdb.HGet(ctx, "job:"+id, "payload").Val() == "" {
			t.Errorf("job %s lost its payload", id)
		}
	}
	h.waitFor("the good job to complete", func() bool { return h.status(good) == "completed" })
	if h.status(unknown) != "pending" || h.rdb.ZScore(ctx, "jobs:pending", unknown).Err() != nil {
		t.Errorf("a job for a service nobody here serves must stay pending for another machine; status %q", h.status(unknown))
	}
}

func TestRetryableFailuresAreRetriedThenFail(t *testing.T) {
	// One slot and no backoff: the retries come back to it at once.
	h := start(t, map[string]string{"WORKER_CONNECTORS": "mock", "WORKER_RETRY_AVOID_SECONDS": "0", "WORKER_RETRY_BACKOFF_SECONDS": "0"})
	id := h.submit("mock", `{"delay_ms":1,"should_fail":true}`)
	h.waitFor("the job to fail for good", func() bool { return h.status(id) == "failed" })
	if rc := h.rdb.HGet(context.Background(), "job:"+id, "retry_count").Val(); rc != "3" {
		t.Errorf("retry_count = %s, want 3 attempts", rc)
	}
	if e := h.rdb.HGet(context.Background(), "job:"+id, "error").Val(); e != "Mock failure requested" {
		t.Errorf("error = %q", e)
	}
}

func TestDrainFinishesShortJobsAndReturnsLongOnes(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation:2", "MACHINE_DRAIN_TIMEOUT": "1s"})
	short := h.submit("simulation", `{"duration_ms":300,"steps":3}`)
	long := h.submit("simulation", `{"duration_ms":60000,"steps":60}`)
	h.waitFor("both jobs to start", func() bool { return h.status(short) == "in_progress" && h.status(long) == "in_progress" })
	h.stop()
	if st := h.status(short); st != "completed" {
		t.Errorf("short job ended %q, want completed within the drain timeout", st)
	}
	ctx := context.Background()
	lh := h.rdb.HGetAll(ctx, "job:"+long).Val()
	if lh["status"] != "pending" || lh["retry_count"] != "0" || lh["worker_id"] != "" {
		t.Errorf("long job after drain: %v; want pending with its retries untouched", lh)
	}
	if h.rdb.ZScore(ctx, "jobs:pending", long).Err() != nil {
		t.Error("long job is not back in jobs:pending")
	}
	keys := h.rdb.Keys(ctx, "jobs:active:*").Val()
	for _, k := range keys {
		if n := h.rdb.HLen(ctx, k).Val(); n != 0 {
			t.Errorf("%s still lists %d jobs", k, n)
		}
	}
	if n := len(h.rdb.Keys(ctx, "worker:test-box-*").Val()); n != 0 {
		t.Errorf("%d worker keys left after a clean stop", n)
	}
}

func TestHTTPRoutes(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation", "MACHINE_API_TOKEN": "s3cret-token"})
	base := "http://" + h.m.HTTPAddr()
	get := func(method, path, token string) (int, map[string]any, string) {
		req, _ := http.NewRequest(method, base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		return resp.StatusCode, m, string(body)
	}
	code, body, _ := get("GET", "/health", "")
	if code != 200 || body["healthy"] != true {
		t.Errorf("/health = %d %v", code, body)
	}
	if agg, _ := body["services"].(map[string]any)["status-aggregator"].(map[string]any); agg["healthy"] != true {
		t.Errorf("/health status-aggregator = %v", agg)
	}
	if code, body, _ = get("GET", "/ready", ""); code != 200 || body["ready"] != true {
		t.Errorf("/ready = %d %v", code, body)
	}
	code, body, raw := get("GET", "/status", "")
	if code != 200 || body["machine_id"] != "test-box" || body["phase"] != "ready" {
		t.Errorf("/status = %d %v", code, body)
	}
	if strings.Contains(raw, "s3cret-token") {
		t.Error("/status shows the API token")
	}
	if code, body, _ = get("POST", "/refresh-status", ""); code != 200 || body["message"] != "Status update triggered" {
		t.Errorf("/refresh-status = %d %v", code, body)
	}
	if code, _, raw = get("GET", "/metrics", ""); code != 200 || !strings.Contains(raw, "machine_broker_up 1") {
		t.Errorf("/metrics = %d, lacks machine_broker_up 1", code)
	}
	if code, _, _ = get("POST", "/restart/service?service=comfyui-gpu0", ""); code != 401 {
		t.Errorf("restart without token = %d, want 401", code)
	}
	if code, body, _ = get("POST", "/restart/service?service=comfyui-gpu0", "s3cret-token"); code != 404 || !strings.Contains(fmt.Sprint(body["error"]), "comfyui-gpu0") {
		t.Errorf("restart of an unknown service = %d %v", code, body)
	}
	if code, _, _ = get("GET", "/nope", ""); code != 404 {
		t.Errorf("unknown route = %d", code)
	}
}

func TestMachineStatusIsPublished(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation", "MACHINE_STATUS_UPDATE_INTERVAL_SECONDS": "1"})
	ctx := context.Background()
	ps := h.rdb.Subscribe(ctx, "machine:status:test-box")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	id := h.submit("simulation", `{"duration_ms":1500}`) // longer than the 250 ms coalescing window
	deadline := time.After(15 * time.Second)
	for !(seen["periodic"] && seen["event_driven:busy"]) {
		select {
		case msg := <-ps.Channel():
			var m struct {
				UpdateType string `json:"update_type"`
				Status     struct {
					Workers map[string]struct {
						Status       string  `json:"status"`
						CurrentJobID *string `json:"current_job_id"`
					} `json:"workers"`
				} `json:"status"`
			}
			if err := json.Unmarshal([]byte(msg.Payload), &m); err != nil {
				t.Fatal(err)
			}
			seen[m.UpdateType] = true
			for _, w := range m.Status.Workers {
				if m.UpdateType == "event_driven" && w.Status == "busy" && w.CurrentJobID != nil && *w.CurrentJobID == id {
					seen["event_driven:busy"] = true
				}
			}
		case <-deadline:
			t.Fatalf("status messages seen: %v; want a periodic one and an event-driven one showing the busy slot", seen)
		}
	}
}

// A console that attaches, detaches and attaches again leaves the core as it was: the same
// slots, the same phase, jobs still flowing.
// Connectors change while the machine runs: enabled ones start claiming at once and are
// registered and advertised; disabled ones drain (a running job finishes) and disappear;
// concurrency changes add or remove slots. The HTTP route needs the token.
// A job whose machine died (SIGKILL: nothing renews its lease) runs again on another machine,
// with its retries untouched.
// Redis stops answering while a job runs: the job goes on, its outcome is held and lands when
// Redis is back, and the slots claim again within seconds.
// Shutdown with Redis unreachable ends (after the drain timeout and its grace) instead of
// hanging on writes that cannot land.
