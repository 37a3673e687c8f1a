package broker_test

import (
	"context"
	"encoding/json"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/internal/redistest"
)

type env struct {
	t   testing.TB
	ctx context.Context
	rdb *redis.Client
	b   *broker.Broker
}

func newEnv(t testing.TB) *env {
	t.Helper()
	srv := redistest.Start(t)
	rdb := srv.Client()
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return &env{t: t, ctx: ctx, rdb: rdb, b: broker.New(rdb)}
}

// apiJob writes a job exactly as the API's submitJob does (emp-reference §1.2, §6): one HMSET of
// every field, absent values "", then ZADD with the API's score. It is written by hand here,
// not through broker.Submit, so the tests check our reader against the real writer's shape.
func (e *env) apiJob(id string, over map[string]string) map[string]string {
	e.t.Helper()
	created := time.Now().Add(-time.Minute)
	f := map[string]string{
		"id": id, "service_required": "simulation", "priority": "50", "payload": `{"steps":2}`,
		"requirements": "", "customer_id": "", "created_at": created.UTC().Format("2006-01-02T15:04:05.000Z"),
		"status": "pending", "retry_count": "0", "max_retries": "3", "workflow_id": "",
		"workflow_priority": "", "workflow_datetime": "", "current_step": "", "total_steps": "", "ctx": "",
		"job_trace_id": "", "job_span_id": "", "workflow_trace_id": "", "workflow_span_id": "",
	}
	for k, v := range over {
		f[k] = v
	}
	if err := e.rdb.HSet(e.ctx, "job:"+id, f).Err(); err != nil {
		e.t.Fatal(err)
	}
	p, _ := strconv.ParseFloat(f["priority"], 64)
	if wp, err := strconv.ParseFloat(f["workflow_priority"], 64); err == nil {
		p = wp
	}
	ts, _ := time.Parse(time.RFC3339Nano, f["created_at"])
	tms := float64(ts.UnixMilli())
	if wd, err := strconv.ParseFloat(f["workflow_datetime"], 64); err == nil {
		tms = wd
	}
	score := p*1e15 - math.Floor(tms/1000)
	if err := e.rdb.ZAdd(e.ctx, "jobs:pending", redis.Z{Score: score, Member: id}).Err(); err != nil {
		e.t.Fatal(err)
	}
	return f
}

type slotCaps struct {
	id       string
	services []string
	mutate   func(*broker.Capabilities)
}

func (e *env) caps(c slotCaps) []byte {
	e.t.Helper()
	if c.id == "" {
		c.id = "m1-worker-simulation-0"
	}
	if c.services == nil {
		c.services = []string{"simulation"}
	}
	caps := broker.Capabilities{
		WorkerID: c.id, MachineID: "m1", Services: c.services,
		Hardware:       broker.Hardware{GPUCount: 1, GPUMemoryGB: 24, GPUModel: "RTX 4090", RAMGB: 64, CPUCores: 16},
		CustomerAccess: broker.CustomerAccess{Isolation: "loose"},
		Performance:    broker.Performance{ConcurrentJobs: 1},
	}
	if c.mutate != nil {
		c.mutate(&caps)
	}
	b, err := caps.Encode()
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func (e *env) claimID(caps []byte) string {
	e.t.Helper()
	j, _, err := e.b.Claim(e.ctx, caps, 10000, 0)
	if err != nil {
		e.t.Fatalf("claim: %v", err)
	}
	if j == nil {
		return ""
	}
	return j.ID
}

// listen subscribes to channels and returns a function that collects what arrived so far.
func (e *env) listen(channels ...string) func(wait int) map[string][]map[string]any {
	e.t.Helper()
	ps := e.rdb.Subscribe(e.ctx, channels...)
	if _, err := ps.Receive(e.ctx); err != nil {
		e.t.Fatal(err)
	}
	for range len(channels) - 1 {
		if _, err := ps.Receive(e.ctx); err != nil {
			e.t.Fatal(err)
		}
	}
	e.t.Cleanup(func() { ps.Close() })
	got := map[string][]map[string]any{}
	ch := ps.Channel()
	return func(wait int) map[string][]map[string]any {
		e.t.Helper()
		total := 0
		for _, v := range got {
			total += len(v)
		}
		deadline := time.After(5 * time.Second)
		for total < wait {
			select {
			case m := <-ch:
				var body map[string]any
				if err := json.Unmarshal([]byte(m.Payload), &body); err != nil {
					e.t.Fatalf("channel %s carried invalid JSON %q: %v", m.Channel, m.Payload, err)
				}
				got[m.Channel] = append(got[m.Channel], body)
				total++
			case <-deadline:
				e.t.Fatalf("waited for %d messages, got %d: %v", wait, total, got)
			}
		}
		return got
	}
}

func jobResult() job.Result { return job.Result{Success: true} }
