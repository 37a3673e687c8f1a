package machine_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/core/machine"
	"github.com/emp-job-queue/machine/core/plan"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/gpu"
	"github.com/emp-job-queue/machine/internal/fakeopenai"
	"github.com/emp-job-queue/machine/internal/redistest"
	"github.com/emp-job-queue/machine/internal/testutil"
)

type harness struct {
	t      testing.TB
	rdb    *redis.Client
	b      *broker.Broker
	m      *machine.Machine
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// start runs a machine against a real redis-server with the given environment on top of
// test defaults. The fallback poll is ten minutes, so any pickup the tests see came from the
// job_submitted wake-up.
func start(t testing.TB, env map[string]string) *harness {
	t.Helper()
	return startWith(t, env, machine.Options{Version: "test"})
}

func startWith(t testing.TB, env map[string]string, opts machine.Options) *harness {
	t.Helper()
	return startOn(t, redistest.Start(t).URL, env, opts)
}

func startWithRedis(t testing.TB, url string, env map[string]string) *harness {
	t.Helper()
	return startOn(t, url, env, machine.Options{Version: "test"})
}

func startOn(t testing.TB, url string, env map[string]string, opts machine.Options) *harness {
	t.Helper()
	base := map[string]string{
		"HUB_REDIS_URL": url, "MACHINE_ID": "test-box", "MACHINE_HEALTH_PORT": "0",
		"WORKER_POLL_INTERVAL_MS": "600000", "MACHINE_RUN_DIR": t.TempDir(),
		"WORKER_SIMULATION_PROCESSING_TIME": "0.05", "WORKER_SIMULATION_STEPS": "2",
		"MACHINE_DRAIN_TIMEOUT": "2s", "MACHINE_ASSET_DIR": t.TempDir(), "MACHINE_CACHE_DIR": t.TempDir(),
	}
	for k, v := range env {
		base[k] = v
	}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := base[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	m, err := machine.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	opt, _ := redis.ParseURL(url)
	h := &harness{t: t, rdb: redis.NewClient(opt), m: m, cancel: cancel, done: make(chan error, 1)}
	h.b = broker.New(h.rdb)
	go func() { h.done <- m.Run(ctx) }()
	t.Cleanup(func() {
		h.stop()
		h.rdb.Close()
	})
	h.waitFor("the machine to be ready", func() bool { return m.Store().Snapshot().Phase == state.Ready })
	return h
}

func (h *harness) stop() {
	h.once.Do(func() {
		h.cancel()
		select {
		case err := <-h.done:
			if err != nil {
				h.t.Errorf("machine stopped with %v", err)
			}
		case <-time.After(30 * time.Second):
			h.t.Fatal("machine did not stop within 30 s")
		}
	})
}

func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	// Generous: CI runs every package at once under the race detector, with Chromium.
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) submit(service, payload string) string {
	h.t.Helper()
	id, err := h.b.Submit(context.Background(), broker.JobSpec{Service: service, Payload: json.RawMessage(payload)})
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

func (h *harness) status(id string) string {
	return h.rdb.HGet(context.Background(), "job:"+id, "status").Val()
}

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
	snap := h.m.Store().Snapshot()
	var done uint64
	for _, s := range snap.Slots {
		done += s.Completed
	}
	if done != 11 {
		t.Fatalf("slots report %d completed jobs, want 11", done)
	}
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
		h.waitFor("job "+id+" to fail", func() bool { return h.status(id) == "failed" })
		var f map[string]any
		_ = json.Unmarshal([]byte(h.rdb.HGet(ctx, "jobs:failed", id).Val()), &f)
		msg, _ := f["error"].(string)
		if !strings.Contains(msg, id) || !strings.Contains(msg, "payload") {
			t.Errorf("failure of %s does not say what is wrong: %q", id, msg)
		}
		if f["retry_count"] != 1.0 {
			t.Errorf("a bad payload was retried: %v", f)
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

func TestUnhealthyGPUStopsItsSlot(t *testing.T) {
	fake := gpu.NewFake(2, "Sim", 24)
	h := startWith(t, map[string]string{"WORKER_CONNECTORS": "simulation", "MACHINE_GPU_SAMPLE_INTERVAL_MS": "100"},
		machine.Options{GPUs: fake})
	fake.Fail(0, "XID 79 critical error")
	h.waitFor("GPU 0 to be reported out of service", func() bool {
		return h.m.Store().Snapshot().Telemetry.Unhealthy[0] != ""
	})
	var ids []string
	for range 6 {
		ids = append(ids, h.submit("simulation", `{"duration_ms":20}`))
	}
	for _, id := range ids {
		h.waitFor("job "+id, func() bool { return h.status(id) == "completed" })
	}
	for _, s := range h.m.Store().Snapshot().Slots {
		if s.GPU == 0 && s.Completed != 0 {
			t.Errorf("slot %s on the failed GPU ran %d jobs", s.ID, s.Completed)
		}
		if s.GPU == 1 && s.Completed != 6 {
			t.Errorf("slot %s on the healthy GPU ran %d jobs, want 6", s.ID, s.Completed)
		}
	}
	resp, err := http.Get("http://" + h.m.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `machine_gpu_healthy{gpu="0",model="Sim"} 0`) ||
		!strings.Contains(string(body), `machine_gpu_healthy{gpu="1",model="Sim"} 1`) {
		t.Errorf("/metrics does not show GPU health:\n%s", grep(string(body), "machine_gpu_healthy"))
	}
}

func TestStatusAttributesJobsToGPUs(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation", "MACHINE_GPU_SAMPLE_INTERVAL_MS": "100"})
	id := h.submit("simulation", `{"duration_ms":30000,"steps":300}`)
	type gpuView struct {
		Index int      `json:"index"`
		Util  *float64 `json:"utilization_percent"`
		Jobs  []string `json:"jobs"`
	}
	var busy, idle gpuView
	h.waitFor("a GPU to show the job and its load", func() bool {
		resp, err := http.Get("http://" + h.m.HTTPAddr() + "/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct {
			GPUs []gpuView `json:"gpus"`
		}
		if json.NewDecoder(resp.Body).Decode(&st) != nil || len(st.GPUs) != 2 {
			return false
		}
		for _, g := range st.GPUs {
			if len(g.Jobs) == 1 && g.Jobs[0] == id {
				busy = g
			} else {
				idle = g
			}
		}
		return busy.Util != nil && *busy.Util > 50
	})
	if idle.Util == nil || *idle.Util > 10 || len(idle.Jobs) != 0 {
		t.Errorf("idle GPU = %+v", idle)
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A console that attaches, detaches and attaches again leaves the core as it was: the same
// slots, the same phase, jobs still flowing.
func TestConsoleAttachDetachLeavesCoreUntouched(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation"})
	before := h.m.Store().Snapshot()
	sock := h.m.ControlSocket()
	for round := 1; round <= 2; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		client, err := control.Dial(ctx, sock)
		if err != nil {
			t.Fatal(err)
		}
		snap := <-client.Updates()
		if snap.Machine.ID != "test-box" || snap.Machine.Phase != "ready" || len(snap.Connectors) != 1 || snap.Connectors[0].Slots != 2 {
			t.Fatalf("round %d: snapshot %+v", round, snap.Machine)
		}
		res, err := client.Do(ctx, control.Command{Op: control.Logs, Service: "nope"})
		if err != nil || res.OK || !strings.Contains(res.Error, "nope") {
			t.Errorf("round %d: logs of an unknown service = %+v, %v", round, res, err)
		}
		if err := client.Close(); err != nil {
			t.Logf("close: %v", err)
		}
		cancel()
		id := h.submit("simulation", `{"duration_ms":10}`)
		h.waitFor("a job after detaching", func() bool { return h.status(id) == "completed" })
	}
	after := h.m.Store().Snapshot()
	if after.Phase != state.Ready || len(after.Slots) != len(before.Slots) || after.Paused {
		t.Errorf("core changed: phase %s, %d slots, paused %v", after.Phase, len(after.Slots), after.Paused)
	}
	if _, err := control.Dial(context.Background(), sock+".missing"); err == nil || !strings.Contains(err.Error(), sock+".missing") {
		t.Errorf("dial of a missing socket: %v", err)
	}
}

func TestDrainAndResumeFromTheConsole(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation"})
	core := h.m.Control()
	if res := core.Do(context.Background(), control.Command{Op: control.Drain}); !res.OK {
		t.Fatal(res.Error)
	}
	id := h.submit("simulation", `{"duration_ms":10}`)
	time.Sleep(300 * time.Millisecond)
	if h.status(id) != "pending" {
		t.Fatalf("a drained machine claimed a job (%s)", h.status(id))
	}
	if snap := core.Snapshot(); !snap.Machine.Paused || snap.Connectors[0].State != "draining" {
		t.Errorf("snapshot while drained: %+v %+v", snap.Machine, snap.Connectors)
	}
	if res := core.Do(context.Background(), control.Command{Op: control.Resume}); !res.OK {
		t.Fatal(res.Error)
	}
	h.waitFor("the job after resuming", func() bool { return h.status(id) == "completed" })
}

// Connectors change while the machine runs: enabled ones start claiming at once and are
// registered and advertised; disabled ones drain (a running job finishes) and disappear;
// concurrency changes add or remove slots. The HTTP route needs the token.
func TestConnectorsChangeLive(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation:1", "MACHINE_API_TOKEN": "tok", "MACHINE_DRAIN_TIMEOUT": "5s"})
	ctx := context.Background()
	core := h.m.Control()
	mockJob := h.submit("mock", `{"delay_ms":10}`)
	time.Sleep(200 * time.Millisecond)
	if h.status(mockJob) != "pending" {
		t.Fatal("a machine without the mock connector took a mock job")
	}
	if res := core.Do(ctx, control.Command{Op: control.EnableConnector, Connector: "mock"}); !res.OK {
		t.Fatal(res.Error)
	}
	h.waitFor("the new connector to take the waiting job", func() bool { return h.status(mockJob) == "completed" })
	if h.rdb.Exists(ctx, "worker:test-box-worker-mock-0").Val() != 1 {
		t.Error("the new slot is not registered")
	}
	if !slices.ContainsFunc(h.m.Plan().Slots, func(s plan.Slot) bool { return s.ID == "test-box-worker-mock-0" }) {
		t.Error("the plan (and so machine:status) does not show the new slot")
	}

	// Disable mock while one of its jobs runs: the job finishes, then the slot goes.
	long := h.submit("mock", `{"delay_ms":800}`)
	h.waitFor("the long mock job to run", func() bool { return h.status(long) == "in_progress" })
	res := core.Do(ctx, control.Command{Op: control.DisableConnector, Connector: "mock"})
	if !res.OK || !strings.Contains(res.Message, "draining") {
		t.Fatalf("disable = %+v", res)
	}
	h.waitFor("the connector to show as draining", func() bool {
		c := core.Snapshot().Connectors
		return c[len(c)-1].State == state.ConnectorDraining
	})
	// Checked against the layout the queued change leaves: mock will not be enabled.
	if again := core.Do(ctx, control.Command{Op: control.DisableConnector, Connector: "mock"}); again.OK || !strings.Contains(again.Error, "not enabled") {
		t.Errorf("a second disable during the drain = %+v", again)
	}
	h.waitFor("the running job to finish during the drain", func() bool { return h.status(long) == "completed" })
	h.waitFor("the mock slot to go", func() bool {
		c := h.m.Control().Snapshot().Connectors
		return len(c) == 2 && c[1].Name == "mock" && c[1].State == "disabled" && c[1].Slots == 0
	})
	if h.rdb.Exists(ctx, "worker:test-box-worker-mock-0").Val() != 0 {
		t.Error("the removed slot is still registered")
	}
	later := h.submit("mock", `{"delay_ms":10}`)
	time.Sleep(300 * time.Millisecond)
	if h.status(later) != "pending" {
		t.Error("a disabled connector still claims")
	}

	// Concurrency over HTTP, with and without the token.
	url := "http://" + h.m.HTTPAddr() + "/connectors/simulation?action=concurrency&count=2"
	resp, _ := http.Post(url, "", nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without the token: %d", resp.StatusCode)
	}
	resp.Body.Close()
	req, _ := http.NewRequest(http.MethodPost, url, nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("with the token: %v %v %s", resp.StatusCode, err, b)
	}
	resp.Body.Close()
	h.waitFor("two simulation slots", func() bool { return len(h.m.Store().Snapshot().Slots) == 2 })
	// Beyond the GPUs: refused with the reason.
	if res := core.Do(ctx, control.Command{Op: control.SetConcurrency, Connector: "simulation", Count: 3}); res.OK || !strings.Contains(res.Error, "GPU") {
		t.Errorf("concurrency beyond the GPUs = %+v", res)
	}

	// A connector that needs a service: the service is installed (found, for the browser) and
	// started, its slot claims once it is ready; disabling it stops the service no other
	// connector needs.
	if res := core.Do(ctx, control.Command{Op: control.EnableConnector, Connector: "playwright"}); !res.OK || !strings.Contains(res.Message, "service") {
		t.Fatalf("enable playwright = %+v", res)
	}
	page := h.submit("playwright", `{"type":"html","html":"<p>live</p>","width":100,"height":50}`)
	h.waitFor("a render through the live-added browser", func() bool { return h.status(page) == "completed" })
	if res := core.Do(ctx, control.Command{Op: control.DisableConnector, Connector: "playwright"}); !res.OK {
		t.Fatalf("disable playwright = %+v", res)
	}
	h.waitFor("the browser service to go", func() bool {
		_, ok := h.m.Store().Snapshot().Service("browser")
		return !ok && len(core.Snapshot().Services) == 0
	})
}

// A job whose machine died (SIGKILL: nothing renews its lease) runs again on another machine,
// with its retries untouched.
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

// Redis stops answering while a job runs: the job goes on, its outcome is held and lands when
// Redis is back, and the slots claim again within seconds.
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

// Shutdown with Redis unreachable ends (after the drain timeout and its grace) instead of
// hanging on writes that cannot land.
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
func TestComfyUIEndToEnd(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "fakecomfy")
	if err := testutil.Build("../../internal/fakecomfy/server", fake); err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(dir, "repo")
	_ = os.MkdirAll(repo, 0o755)
	mainPy := fmt.Sprintf("import os, sys\nos.execv(%q, [%q] + sys.argv[1:])\n", fake, fake)
	_ = os.WriteFile(filepath.Join(repo, "main.py"), []byte(mainPy), 0o644)
	_ = os.WriteFile(filepath.Join(repo, "requirements.txt"), nil, 0o644)
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "."}, {"commit", "-q", "-m", "comfy"}} {
		c := exec.Command("git", append([]string{"-C", repo, "-c", "user.email=t@e", "-c", "user.name=t"}, args...)...)
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v %s", args, err, out)
		}
	}
	port := testutil.Port(t)
	h := start(t, map[string]string{"WORKER_CONNECTORS": "comfyui", "MACHINE_GPU_COUNT": "1",
		"COMFYUI_REPO_URL": "file://" + repo, "COMFYUI_BRANCH": "main", "COMFYUI_DIR": filepath.Join(dir, "ComfyUI"),
		"MACHINE_CACHE_DIR": filepath.Join(dir, "cache"), "COMFYUI_BASE_PORT": fmt.Sprint(port), "COMFY_ARGS": "--highvram"})
	h.waitFor("ComfyUI to be ready", func() bool {
		st, ok := h.m.Store().Snapshot().Service("comfyui-gpu0")
		return ok && st.State == "ready"
	})
	id := h.submit("comfyui", `{"workflow":{"3":{"class_type":"KSampler","inputs":{}}}}`)
	h.waitFor("the workflow to complete", func() bool { return h.status(id) == "completed" })
	var stored struct {
		Data struct {
			Data map[string]any `json:"data"`
		} `json:"data"`
	}
	_ = json.Unmarshal([]byte(h.rdb.HGet(context.Background(), "jobs:completed", id).Val()), &stored)
	if u, _ := stored.Data.Data["image_url"].(string); !strings.HasSuffix(u, id+".png") {
		t.Errorf("result = %v", stored.Data.Data)
	}
	res := h.m.Control().Do(context.Background(), control.Command{Op: control.Logs, Service: "comfyui-gpu0", Lines: 10})
	want := fmt.Sprintf("args [--listen 127.0.0.1 --port %d --cuda-device 0 --highvram]", port)
	if !res.OK || !strings.Contains(strings.Join(res.Lines, "\n"), want) {
		t.Errorf("ComfyUI's command line: %v, want %s", res.Lines, want)
	}
}

// OpenAI jobs through the machine, against the in-repo fake: text and an image saved as an
// asset; the key appears nowhere the operator looks.
func TestOpenAIThroughTheMachine(t *testing.T) {
	const key = "sk-machine-test-key-123456"
	fake := fakeopenai.New(key)
	api := httptest.NewServer(fake.Handler())
	defer api.Close()
	assetsDir := t.TempDir()
	h := start(t, map[string]string{"WORKER_CONNECTORS": "openai:2", "OPENAI_API_KEY": key, "OPENAI_BASE_URL": api.URL + "/v1",
		"MACHINE_ASSET_DIR": assetsDir, "MACHINE_ASSET_BASE_URL": "https://cdn.example.com"})
	text := h.submit("openai_text", `{"prompt":"hi"}`)
	img := h.submit("openai_image", `{"prompt":"a cat"}`)
	edit := h.submit("openai_img2img", `{"prompt":"make it blue","images":["data:image/png;base64,`+
		base64.StdEncoding.EncodeToString(fakeopenai.PNG)+`"]}`)
	for _, id := range []string{text, img, edit} {
		h.waitFor("job "+id, func() bool { return h.status(id) == "completed" })
	}
	stored := h.rdb.HGet(context.Background(), "jobs:completed", img).Val()
	if !strings.Contains(stored, "https://cdn.example.com/"+img+".png") || !strings.Contains(stored, `"mime_type":"image/png"`) {
		t.Errorf("image result = %s", stored)
	}
	if edited := h.rdb.HGet(context.Background(), "jobs:completed", edit).Val(); !strings.Contains(edited, "https://cdn.example.com/"+edit+".png") {
		t.Errorf("img2img result = %s", edited)
	}
	if len(fake.Edits) != 1 || fake.Edits[0].Prompt != "make it blue" || len(fake.Edits[0].Images) != 1 || fake.Edits[0].Images[0] != "image/png" {
		t.Errorf("edits the fake received: %+v", fake.Edits)
	}
	resp, err := http.Get("http://" + h.m.HTTPAddr() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), key) {
		t.Error("/status shows the OpenAI key")
	}
}

// The browser connector end to end: the machine finds Chromium, supervises it as a service,
// gates the slot on its DevTools answering, and renders a job.
func TestPlaywrightThroughTheMachine(t *testing.T) {
	assetsDir := t.TempDir()
	// A fallback poll, so a retried attempt (after its backoff) is picked up in the test's time.
	h := start(t, map[string]string{"WORKER_CONNECTORS": "playwright:2", "MACHINE_ASSET_DIR": assetsDir, "WORKER_POLL_INTERVAL_MS": "500"})
	h.waitFor("the browser to be ready", func() bool {
		st, ok := h.m.Store().Snapshot().Service("browser")
		return ok && st.State == "ready"
	})
	id := h.submit("playwright", `{"type":"html","html":"<h1>hi</h1>","width":200,"height":100}`)
	defer func() {
		if t.Failed() {
			t.Logf("job: %v", h.rdb.HGetAll(context.Background(), "job:"+id).Val())
		}
	}()
	h.waitFor("the render", func() bool { return h.status(id) == "completed" })
	if _, err := os.Stat(filepath.Join(assetsDir, id+".png")); err != nil {
		t.Errorf("no PNG: %v", err)
	}
}
