package embedded_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/embedded"
)

// The embedded broker runs the same claim script as Redis: bad entries are quarantined or fail
// closed, non-matches are remembered, and the work budget reaches a job deep in the queue.
func TestClaimScriptRunsOnTheEmbeddedBroker(t *testing.T) {
	eb, err := embedded.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer eb.Close()
	opt, err := redis.ParseURL(eb.URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := broker.New(rdb)
	if err := b.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	submit := func(id string, priority int, requirements string) {
		t.Helper()
		spec := broker.JobSpec{ID: id, Service: "simulation", Priority: priority}
		if requirements != "" {
			spec.Requirements = []byte(requirements)
		}
		if _, err := b.Submit(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	caps, _ := broker.Capabilities{WorkerID: "m1-worker-simulation-0", Services: []string{"simulation"},
		Hardware: broker.Hardware{GPUCount: 1, GPUMemoryGB: 24, RAMGB: 64, CPUCores: 16}}.Encode()
	claim := func(budget int) string {
		t.Helper()
		var cursor int64
		for calls := 0; calls < 10000; calls++ {
			j, next, err := b.Claim(ctx, caps, budget, cursor)
			if err != nil {
				t.Fatalf("claim on the embedded broker: %v", err)
			}
			if j != nil {
				return j.ID
			}
			if next == 0 {
				return ""
			}
			cursor = next
		}
		t.Fatal("the claim never finished its pass")
		return ""
	}

	// Bad entries first in line, a good job behind them.
	rdb.Set(ctx, "job:not-a-hash", "x", 0)
	rdb.ZAdd(ctx, broker.KeyPending, redis.Z{Score: 99e15, Member: "not-a-hash"})
	deep := strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000)
	for id, requirements := range map[string]string{"array": `[{"hardware":{"gpu_memory_gb":1}}]`, "malformed": `{not json`, "deep": deep} {
		rdb.HSet(ctx, "job:"+id, "id", id, "service_required", "simulation", "requirements", requirements, "status", "pending")
		rdb.ZAdd(ctx, broker.KeyPending, redis.Z{Score: 98e15, Member: id})
	}
	submit("good", 50, "")
	if id := claim(1000); id != "good" {
		t.Fatalf("claimed %q, want the good job behind the bad entries", id)
	}
	quarantined := rdb.HGetAll(ctx, broker.KeyQuarantine).Val()
	for _, id := range []string{"not-a-hash", "array", "malformed", "deep"} {
		if quarantined[id] == "" || rdb.ZScore(ctx, broker.KeyPending, id).Err() != redis.Nil {
			t.Errorf("%s: quarantine %q, still pending: %v", id, quarantined[id], rdb.ZScore(ctx, broker.KeyPending, id).Err() == nil)
		}
	}
	for _, id := range []string{"array", "malformed", "deep"} {
		if st := rdb.HGet(ctx, "job:"+id, "status").Val(); st != "failed" {
			t.Errorf("%s: status %q, want failed closed", id, st)
		}
	}

	// 500 jobs no worker matches, then one it does, with a budget far smaller than the queue.
	for i := range 500 {
		submit(fmt.Sprintf("huge-%d", i), 90, `{"hardware":{"gpu_memory_gb":9999}}`)
	}
	submit("deep-job", 50, "")
	if id := claim(100); id != "deep-job" {
		t.Fatalf("claimed %q, want the job behind 500 unmatchable ones", id)
	}
	if n := rdb.SCard(ctx, broker.NoMatchPrefix+broker.Fingerprint(caps)).Val(); n != 500 {
		t.Fatalf("the embedded broker remembers %d non-matches, want 500", n)
	}
	submit("again", 50, "")
	if id := claim(100); id != "again" {
		t.Fatalf("claimed %q with the non-matches remembered", id)
	}
}
