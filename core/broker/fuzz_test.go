package broker_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/internal/redistest"
)

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// FuzzMatching: any requirements a submitter writes, against any custom capabilities, never
// make the claim script fail, and a job is claimed, still pending, or failed closed with the
// reason on the job and in jobs:quarantine: never lost.
func FuzzMatching(f *testing.F) {
	f.Add(`{"hardware":{"gpu_memory_gb":24}}`, `{"region":"eu"}`, "cust")
	f.Add(`{"positive_requirements":{"models":["a"]},"negative_requirements":{"hardware":{"cpu_cores":1}}}`, `{}`, "")
	f.Add(`{"a.b.c":[1,2,{"x":null}],"customer_isolation":"strict"}`, `{"a":{"b":{"c":[1,2]}}}`, "c1")
	f.Add(`[1,2,3]`, `{"features":null}`, "x")
	f.Add(`{"hardware":"all","models":"all"}`, `{"hardware":5}`, "")
	srv := redistest.Start(f)
	rdb := srv.Client()
	defer rdb.Close()
	b := broker.New(rdb)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, requirements, custom, customer string) {
		rdb.FlushAll(ctx) // our own server
		var extra map[string]any
		_ = jsonUnmarshal(custom, &extra)
		caps, err := broker.Capabilities{WorkerID: "w", Services: []string{"simulation"}, Custom: extra,
			Hardware: broker.Hardware{GPUMemoryGB: 24, CPUCores: 8, RAMGB: 64}}.Encode()
		if err != nil {
			t.Fatal(err)
		}
		rdb.HSet(ctx, "job:f", map[string]any{"id": "f", "service_required": "simulation", "requirements": requirements,
			"customer_id": customer, "payload": "{}", "status": "pending", "priority": "50"})
		rdb.ZAdd(ctx, "jobs:pending", redisZ(1, "f"))
		j, _, err := b.Claim(ctx, caps, 100, 0)
		if err != nil {
			t.Fatalf("claim failed on requirements %q: %v", requirements, err)
		}
		pending := rdb.ZScore(ctx, "jobs:pending", "f").Err() == nil
		h := rdb.HGetAll(ctx, "job:f").Val()
		failed := h["status"] == "failed" && h["error"] != "" && rdb.HExists(ctx, broker.KeyQuarantine, "f").Val()
		if n := btoi(j != nil) + btoi(pending) + btoi(failed); n != 1 {
			t.Fatalf("requirements %q: claimed %v, still pending %v, failed closed %v (%q)", requirements, j != nil, pending, failed, h["error"])
		}
	})
}
