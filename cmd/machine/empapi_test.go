package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// empAPI does, against the real Redis, what the unmodified emp API does with what machines
// publish (apps/api/src/lightweight-api-server.ts at ceb26d4 of stakeordie/emp-job-queue). It
// takes messages one at a time from one subscriber connection, as the API's progressSubscriber
// does:
//
//   - machine:status:* → handleUnifiedMachineStatus: HSET machine:{id}:info and EXPIRE 120; for
//     every worker listed in structure.workers that status.workers also has, HSET worker:{id}
//     (status || 'unknown', last_activity || now, is_connected || false, …) and EXPIRE 120; the
//     message is kept as the machine's entry of unifiedMachineStatus, which the monitor's
//     snapshot (the function that builds `workers` from unifiedMachineStatus) reads: one worker
//     per structure.workers entry, status from status.workers or 'unknown'.
//   - update_job_progress → broadcastProgress: relayed to clients only when
//     `progressData.worker_id && progressData.progress`, as parseInt(progress).
//   - complete_job: recorded, to check that progress 100 comes before it.
type empAPI struct {
	t   *testing.T
	rdb *redis.Client

	mu       sync.Mutex
	statuses []map[string]any          // machine:status messages, in order
	latest   map[string]map[string]any // unifiedMachineStatus: machine id → last message
	raw      map[string][]float64      // job id → every update_job_progress, as published
	relayed  map[string][]int          // job id → what the API relays to clients
	events   map[string][]string       // job id → "progress:N" and "complete_job", in order
	done     chan struct{}
}

func startEmpAPI(t *testing.T, rdb *redis.Client) *empAPI {
	t.Helper()
	a := &empAPI{t: t, rdb: rdb, latest: map[string]map[string]any{}, raw: map[string][]float64{},
		relayed: map[string][]int{}, events: map[string][]string{}, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	ps := rdb.Subscribe(ctx, "update_job_progress", "complete_job")
	if err := ps.PSubscribe(ctx, "machine:status:*"); err != nil {
		t.Fatal(err)
	}
	for range 3 { // the subscriptions are in place before any machine starts
		if _, err := ps.Receive(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ch := ps.Channel()
	go func() {
		defer close(a.done)
		for m := range ch {
			a.handle(ctx, m)
		}
	}()
	t.Cleanup(func() { cancel(); ps.Close(); <-a.done })
	return a
}

func (a *empAPI) handle(ctx context.Context, m *redis.Message) {
	var body map[string]any
	if err := json.Unmarshal([]byte(m.Payload), &body); err != nil {
		a.t.Errorf("%s carried invalid JSON: %v", m.Channel, err)
		return
	}
	switch m.Channel {
	case "update_job_progress":
		id, _ := body["job_id"].(string)
		pct, _ := body["progress"].(float64)
		a.mu.Lock()
		defer a.mu.Unlock()
		a.raw[id] = append(a.raw[id], pct)
		a.events[id] = append(a.events[id], fmt.Sprintf("progress:%v", pct))
		if truthy(body["worker_id"]) && truthy(body["progress"]) { // broadcastProgress
			a.relayed[id] = append(a.relayed[id], int(math.Trunc(pct))) // parseInt
		}
	case "complete_job":
		id, _ := body["job_id"].(string)
		a.mu.Lock()
		defer a.mu.Unlock()
		a.events[id] = append(a.events[id], "complete_job")
	default:
		a.unifiedMachineStatus(ctx, body)
	}
}

// unifiedMachineStatus is handleUnifiedMachineStatus, line for line where it touches Redis.
func (a *empAPI) unifiedMachineStatus(ctx context.Context, msg map[string]any) {
	machineID, _ := msg["machine_id"].(string)
	structure := obj(msg["structure"])
	status := obj(msg["status"])
	statusWorkers, statusServices, machine := obj(status["workers"]), obj(status["services"]), obj(status["machine"])
	now := time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
	info := map[string]any{
		"machine_id": machineID, "status": or(machine["phase"], "unknown"), "last_activity": now,
		"gpu_count": or(structure["gpu_count"], 0), "capabilities": jsonString(or(structure["capabilities"], []any{})),
		"structure": jsonString(structure), "uptime_ms": or(machine["uptime_ms"], 0),
	}
	a.rdb.HSet(ctx, "machine:"+machineID+":info", stringify(info))
	a.rdb.Expire(ctx, "machine:"+machineID+":info", 120*time.Second)
	if structure["workers"] != nil && status["workers"] != nil {
		for id, w := range obj(structure["workers"]) {
			ws, ok := statusWorkers[id].(map[string]any)
			if !ok {
				continue
			}
			worker := obj(w)
			data := map[string]any{
				"worker_id": id, "machine_id": machineID, "status": or(ws["status"], "unknown"),
				"is_connected": or(ws["is_connected"], false), "current_job_id": or(ws["current_job_id"], ""),
				"last_activity":      or(ws["last_activity"], now),
				"capabilities":       jsonString(map[string]any{"gpu_id": worker["gpu_id"], "services": worker["services"]}),
				"connector_statuses": jsonString(statusServices),
			}
			a.rdb.HSet(ctx, "worker:"+id, stringify(data))
			a.rdb.Expire(ctx, "worker:"+id, 120*time.Second)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.statuses = append(a.statuses, msg)
	a.latest[machineID] = msg
}

// snapshotWorkers is what the API's snapshot shows the monitor for a machine: worker id → status.
func (a *empAPI) snapshotWorkers(machineID string) map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	msg := a.latest[machineID]
	out := map[string]string{}
	status := obj(obj(msg["status"])["workers"])
	for id := range obj(obj(msg["structure"])["workers"]) {
		out[id] = or(obj(status[id])["status"], "unknown").(string)
	}
	return out
}

func (a *empAPI) messages() []map[string]any {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]map[string]any(nil), a.statuses...)
}

func (a *empAPI) progress(jobID string) (raw []float64, relayed []int, events []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append(raw, a.raw[jobID]...), append(relayed, a.relayed[jobID]...), append(events, a.events[jobID]...)
}

// attestations is GET /api/attestations?workflow_id=: KEYS worker:completion:*, each value
// JSON-parsed, kept when its workflow_id is the one asked for.
func (a *empAPI) attestations(ctx context.Context, workflowID string) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, key := range a.rdb.Keys(ctx, "worker:completion:*").Val() {
		var rec map[string]any
		if json.Unmarshal([]byte(a.rdb.Get(ctx, key).Val()), &rec) == nil && rec["workflow_id"] == workflowID {
			out[key] = rec
		}
	}
	return out
}

// JavaScript's view of JSON values.
func truthy(v any) bool {
	switch t := v.(type) {
	case nil:
		return false
	case bool:
		return t
	case float64:
		return t != 0 && !math.IsNaN(t)
	case string:
		return t != ""
	}
	return true
}

func or(v, fallback any) any {
	if truthy(v) {
		return v
	}
	return fallback
}

func obj(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// stringify turns values into the strings ioredis writes for them.
func stringify(m map[string]any) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		switch t := v.(type) {
		case string:
			out[k] = t
		case float64:
			out[k] = strconv.FormatFloat(t, 'f', -1, 64)
		case int:
			out[k] = strconv.Itoa(t)
		default:
			out[k] = fmt.Sprint(t)
		}
	}
	return out
}
