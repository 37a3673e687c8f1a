package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/internal/oldworker"
	"github.com/emp-job-queue/machine/internal/redistest"
)

// ledger records, per job, every claim and completion announced on the bus.
type ledger struct {
	mu        sync.Mutex
	claims    map[string][]string // job → worker ids, in order
	completes map[string][]string
}

func (l *ledger) get(m map[string][]string, id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), m[id]...)
}

func (l *ledger) completedBy(id string) []string { return l.get(l.completes, id) }
func (l *ledger) claimedBy(id string) []string   { return l.get(l.claims, id) }

func listen(t *testing.T, srv *redistest.Server) *ledger {
	t.Helper()
	rdb := srv.Client()
	ps := rdb.Subscribe(context.Background(), "job_claimed", "complete_job")
	if _, err := ps.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	l := &ledger{claims: map[string][]string{}, completes: map[string][]string{}}
	go func() {
		for msg := range ps.Channel() {
			var m struct {
				JobID    string `json:"job_id"`
				WorkerID string `json:"worker_id"`
			}
			_ = json.Unmarshal([]byte(msg.Payload), &m)
			l.mu.Lock()
			if msg.Channel == "job_claimed" {
				l.claims[m.JobID] = append(l.claims[m.JobID], m.WorkerID)
			} else {
				l.completes[m.JobID] = append(l.completes[m.JobID], m.WorkerID)
			}
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { ps.Close(); rdb.Close() })
	return l
}

const newMachine = "new-box"

func isNew(worker string) bool { return strings.HasPrefix(worker, newMachine+"-worker-") }

// Side by side, and back: two workers of the old runtime, claiming through emp's own
// findMatchingJob function loaded into a real redis-server, and a new machine process share one
// queue; both complete jobs and no job is claimed twice. Then the new machine gets SIGTERM: what
// it held goes back to the queue, and every remaining job is completed by the old workers. That
// is the rollback.
func TestSideBySideWithTheOldRuntimeAndRollback(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	defer rdb.Close()
	ctx := context.Background()
	code, err := os.ReadFile("../../internal/oldworker/testdata/findMatchingJob.lua")
	if err != nil {
		t.Fatal(err)
	}
	if err := oldworker.LoadFunction(ctx, rdb, string(code)); err != nil {
		t.Fatal(err)
	}
	bus := listen(t, srv)
	b := broker.New(rdb)

	olds := []*oldworker.Worker{
		{ID: "old-box-worker-simulation-0", MachineID: "old-box", Services: []string{"simulation"}, Poll: 20 * time.Millisecond},
		{ID: "old-box-worker-simulation-1", MachineID: "old-box", Services: []string{"simulation"}, Poll: 20 * time.Millisecond},
	}
	oldCtx, stopOld := context.WithCancel(ctx)
	var oldDone sync.WaitGroup
	for _, w := range olds {
		oldDone.Go(func() {
			if err := w.Run(oldCtx, srv.Client()); err != nil {
				t.Errorf("old worker %s: %v", w.ID, err)
			}
		})
	}
	defer func() { stopOld(); oldDone.Wait() }()

	p := startMachine(t, map[string]string{"HUB_REDIS_URL": srv.URL, "MACHINE_ID": newMachine, "WORKER_CONNECTORS": "simulation:2",
		"GPU_MODE": "mock", "MACHINE_GPU_COUNT": "2", "MACHINE_RUN_DIR": t.TempDir(), "MACHINE_DRAIN_TIMEOUT": "100ms",
		"WORKER_SIMULATION_STEPS": "2", "WORKER_POLL_INTERVAL_MS": "200"})

	submit := func(n, ms int) []string {
		ids := make([]string, n)
		for i := range ids {
			id, err := b.Submit(ctx, broker.JobSpec{Service: "simulation", Payload: json.RawMessage(fmt.Sprintf(`{"duration_ms":%d}`, ms))})
			if err != nil {
				t.Fatal(err)
			}
			ids[i] = id
		}
		return ids
	}
	waitAll := func(ids []string) {
		t.Helper()
		waitUntil(t, "every job to complete", func() bool {
			for _, id := range ids {
				if len(bus.completedBy(id)) == 0 {
					return false
				}
			}
			return true
		})
	}

	// Side by side.
	first := submit(30, 100)
	waitAll(first)
	byNew, byOld := 0, 0
	for _, id := range first {
		done, claims := bus.completedBy(id), bus.claimedBy(id)
		if len(done) != 1 || len(claims) != 1 || claims[0] != done[0] {
			t.Errorf("job %s: claimed by %v, completed by %v; want one claim and one completion by the same worker", id, claims, done)
			continue
		}
		if isNew(done[0]) {
			byNew++
		} else {
			byOld++
		}
	}
	if byNew == 0 || byOld == 0 {
		t.Errorf("completed by the new machine %d, by the old workers %d: both should take jobs from the shared queue", byNew, byOld)
	}

	// And back: SIGTERM while the new machine holds jobs.
	second := submit(6, 2000)
	var held []string
	waitUntil(t, "the new machine to claim a job of the second batch", func() bool {
		held = nil
		for _, id := range second {
			if c := bus.claimedBy(id); len(c) > 0 && isNew(c[0]) {
				held = append(held, id)
			}
		}
		return len(held) > 0
	})
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
		if err := p.Err(); err != nil {
			t.Fatalf("the new machine exited with %v:\n%s", err, p.log())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the new machine did not stop within 60 s of SIGTERM")
	}
	afterExit := map[string]int{}
	for _, id := range second {
		afterExit[id] = len(bus.completedBy(id))
	}
	waitAll(second)
	for _, id := range second {
		done := bus.completedBy(id)
		if len(done) != 1 {
			t.Errorf("job %s completed %d times (%v)", id, len(done), done)
			continue
		}
		if afterExit[id] == 0 && isNew(done[0]) {
			t.Errorf("job %s was completed by the new machine after it exited", id)
		}
	}
	t.Logf("side by side: new machine %d jobs, old workers %d; at SIGTERM the new machine held %d job(s), completed after the drain by %v",
		byNew, byOld, len(held), func() (who []string) {
			for _, id := range held {
				who = append(who, bus.completedBy(id)...)
			}
			return who
		}())
	for _, id := range held {
		done := bus.completedBy(id)
		if len(done) == 1 && !isNew(done[0]) {
			// Returned by the drain, then run by an old worker, without using a retry.
			if rc := rdb.HGet(ctx, "job:"+id, "retry_count").Val(); rc != "0" && rc != "" {
				t.Errorf("job %s returned by the drain has retry_count %s", id, rc)
			}
		}
	}
	for _, slot := range []string{newMachine + "-worker-simulation-0", newMachine + "-worker-simulation-1"} {
		if rdb.Exists(ctx, "worker:"+slot+":heartbeat").Val() != 0 {
			t.Errorf("%s still heartbeats after the machine stopped", slot)
		}
	}
	if rdb.ZCard(ctx, "jobs:pending").Val() != 0 {
		t.Errorf("jobs left pending: %v", rdb.ZRange(ctx, "jobs:pending", 0, -1).Val())
	}
}
