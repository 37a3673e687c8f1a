package machine_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/machine"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/internal/redistest"
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

// failed waits for a job to fail and returns its error and retry count from jobs:failed.
func (h *harness) failed(id string) (errText string, retries float64) {
	h.t.Helper()
	h.waitFor("job "+id+" to fail", func() bool { return h.status(id) == "failed" })
	var f struct {
		Error      string  `json:"error"`
		RetryCount float64 `json:"retry_count"`
	}
	_ = json.Unmarshal([]byte(h.rdb.HGet(context.Background(), "jobs:failed", id).Val()), &f)
	return f.Error, f.RetryCount
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
