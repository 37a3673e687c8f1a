package broker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
)

func TestMatchingRules(t *testing.T) {
	strict := func(c *broker.Capabilities) { c.CustomerAccess.Isolation = "strict" }
	cases := []struct {
		name string
		job  map[string]string
		caps func(*broker.Capabilities)
		want bool
	}{
		{"service matches", nil, nil, true},
		{"service not served", map[string]string{"service_required": "comfyui"}, nil, false},
		{"empty service must be served too", map[string]string{"service_required": ""}, nil, false},
		{"matching uses job_service_required_map", map[string]string{"service_required": "openai_text"},
			func(c *broker.Capabilities) {
				c.Services = []string{"openai_text"}
				c.JobServiceRequiredMap = []string{"openai_text"}
			}, true},

		{"workflow-restricted slot takes its workflow", map[string]string{"workflow_id": "wf-1"},
			func(c *broker.Capabilities) { c.WorkflowID = "wf-1" }, true},
		{"workflow-restricted slot skips other workflows", map[string]string{"workflow_id": "wf-2"},
			func(c *broker.Capabilities) { c.WorkflowID = "wf-1" }, false},
		{"workflow-restricted slot skips jobs without workflow", nil,
			func(c *broker.Capabilities) { c.WorkflowID = "wf-1" }, false},
		{"unrestricted slot takes any workflow", map[string]string{"workflow_id": "wf-2"}, nil, true},

		{"hardware gpu memory enough", req(`{"hardware":{"gpu_memory_gb":24}}`), nil, true},
		{"hardware gpu memory too little", req(`{"hardware":{"gpu_memory_gb":48}}`), nil, false},
		{"hardware ram and cores", req(`{"hardware":{"ram_gb":32,"cpu_cores":8}}`), nil, true},
		{"hardware cores too few", req(`{"hardware":{"cpu_cores":32}}`), nil, false},
		{"hardware all", req(`{"hardware":{"gpu_memory_gb":"all"}}`), nil, true},
		{"hardware absent on worker", req(`{"hardware":{"gpu_memory_gb":8}}`),
			func(c *broker.Capabilities) { c.Hardware.GPUMemoryGB = 0 }, false},
		{"hardware null requirement never errors", req(`{"hardware":{"gpu_memory_gb":null}}`), nil, false},
		{"positive_requirements wins over top level", req(`{"positive_requirements":{"hardware":{"gpu_memory_gb":8}},"hardware":{"gpu_memory_gb":99}}`), nil, true},

		{"strict isolation needs strict worker", req(`{"customer_isolation":"strict"}`), nil, false},
		{"strict isolation on strict worker", req(`{"customer_isolation":"strict"}`), strict, true},
		{"strict isolation allow list hit", merge(req(`{"customer_isolation":"strict"}`), map[string]string{"customer_id": "c1"}),
			func(c *broker.Capabilities) { strict(c); c.CustomerAccess.AllowedCustomers = []string{"c1"} }, true},
		{"strict isolation allow list miss", merge(req(`{"customer_isolation":"strict"}`), map[string]string{"customer_id": "c2"}),
			func(c *broker.Capabilities) { strict(c); c.CustomerAccess.AllowedCustomers = []string{"c1"} }, false},
		{"strict isolation deny list", merge(req(`{"customer_isolation":"strict"}`), map[string]string{"customer_id": "c1"}),
			func(c *broker.Capabilities) { strict(c); c.CustomerAccess.DeniedCustomers = []string{"c1"} }, false},
		{"loose isolation ignores lists", map[string]string{"customer_id": "c1"},
			func(c *broker.Capabilities) { c.CustomerAccess.DeniedCustomers = []string{"c1"} }, true},

		{"models subset", req(`{"models":["sdxl","flux"]}`),
			func(c *broker.Capabilities) { c.Models = map[string][]string{"simulation": {"flux", "sdxl", "sd15"}} }, true},
		{"models missing one", req(`{"models":["sdxl","flux"]}`),
			func(c *broker.Capabilities) { c.Models = map[string][]string{"simulation": {"sdxl"}} }, false},
		{"models of another service do not count", req(`{"models":["sdxl"]}`),
			func(c *broker.Capabilities) { c.Models = map[string][]string{"comfyui": {"sdxl"}} }, false},
		{"models all", req(`{"models":"all"}`), nil, true},

		{"custom dotted number ≥", req(`{"performance.concurrent_jobs":1}`), nil, true},
		{"custom dotted number too high", req(`{"performance.concurrent_jobs":2}`), nil, false},
		{"custom array ⊇", req(`{"features":["upscale","inpaint"]}`),
			custom(map[string]any{"features": []any{"inpaint", "upscale", "video"}}), true},
		{"custom array missing item", req(`{"features":["upscale","lipsync"]}`),
			custom(map[string]any{"features": []any{"upscale"}}), false},
		{"custom membership", req(`{"region":"eu"}`), custom(map[string]any{"region": []any{"eu", "us"}}), true},
		{"custom equality", req(`{"tier":"gold"}`), custom(map[string]any{"tier": "gold"}), true},
		{"custom equality miss", req(`{"tier":"gold"}`), custom(map[string]any{"tier": "silver"}), false},
		{"custom object per sub-key", req(`{"location":{"region":"eu","zones":["gdpr"]}}`),
			custom(map[string]any{"location": map[string]any{"region": "eu", "zones": []any{"gdpr", "iso"}}}), true},
		{"custom key the worker lacks", req(`{"quality_level":"high"}`), nil, false},
		{"service_type key is ignored", req(`{"service_type":"whatever"}`), nil, true},

		{"negative hardware rejects big workers", req(`{"negative_requirements":{"hardware":{"gpu_memory_gb":16}}}`), nil, false},
		{"negative hardware passes small workers", req(`{"negative_requirements":{"hardware":{"gpu_memory_gb":48}}}`), nil, true},
		{"negative custom rejects", req(`{"negative_requirements":{"region":"cn"}}`), custom(map[string]any{"region": "cn"}), false},
		{"negative custom passes", req(`{"negative_requirements":{"region":"cn"}}`), custom(map[string]any{"region": "eu"}), true},
		{"negative on absent key passes", req(`{"negative_requirements":{"region":"cn"}}`), nil, true},

		// Malformed requirements fail closed: TestBadEntriesNeverStopClaiming.
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.apiJob("j", tc.job)
			got := e.claimID(e.caps(slotCaps{mutate: tc.caps})) == "j"
			if got != tc.want {
				t.Fatalf("claimed = %v, want %v", got, tc.want)
			}
			inPending := e.rdb.ZScore(e.ctx, "jobs:pending", "j").Err() == nil
			if inPending == tc.want {
				t.Fatalf("job in jobs:pending = %v after claimed = %v", inPending, got)
			}
		})
	}
}

func req(r string) map[string]string { return map[string]string{"requirements": r} }

func merge(a, b map[string]string) map[string]string {
	for k, v := range b {
		a[k] = v
	}
	return a
}

func custom(m map[string]any) func(*broker.Capabilities) {
	return func(c *broker.Capabilities) { c.Custom = m }
}

func iso(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func TestPriorityThenFIFO(t *testing.T) {
	e := newEnv(t)
	base := time.Now().Add(-time.Hour)
	e.apiJob("low-old", map[string]string{"priority": "10", "created_at": iso(base)})
	e.apiJob("mid-new", map[string]string{"priority": "50", "created_at": iso(base.Add(30 * time.Second))})
	e.apiJob("mid-old", map[string]string{"priority": "50", "created_at": iso(base.Add(10 * time.Second))})
	e.apiJob("high", map[string]string{"priority": "90", "created_at": iso(base.Add(40 * time.Second))})
	// A workflow's priority and datetime override the job's own.
	e.apiJob("wf", map[string]string{"priority": "10", "workflow_priority": "50",
		"workflow_datetime": fmt.Sprint(base.Add(-time.Minute).UnixMilli()), "created_at": iso(base.Add(50 * time.Second))})
	caps := e.caps(slotCaps{})
	var order []string
	for range 5 {
		order = append(order, e.claimID(caps))
	}
	want := []string{"high", "wf", "mid-old", "mid-new", "low-old"}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("claim order %v, want %v", order, want)
	}
}

// The retry score is a deliberate choice (broker.RetryScore): a retried job keeps its original
// place, so it runs before newer jobs of the same priority and after higher priorities. The old
// worker's formula would have put it behind "newer".
func TestRetriedJobKeepsItsPlace(t *testing.T) {
	e := newEnv(t)
	const w = "m1-worker-simulation-0"
	base := time.Now().Add(-time.Hour)
	e.apiJob("first", map[string]string{"created_at": iso(base)})
	caps := e.caps(slotCaps{id: w})
	j, _, _ := e.b.Claim(e.ctx, caps, 100, 0)
	e.apiJob("newer", map[string]string{"created_at": iso(base.Add(time.Minute))})
	e.apiJob("urgent", map[string]string{"priority": "80", "created_at": iso(base.Add(2 * time.Minute))})
	if _, err := e.b.Fail(e.ctx, j, w, "flaky", true); err != nil {
		t.Fatal(err)
	}
	var order []string
	for range 3 {
		order = append(order, e.claimID(caps))
	}
	if want := "[urgent first newer]"; fmt.Sprint(order) != want {
		t.Fatalf("order after retry %v, want %v", order, want)
	}
}

func TestDanglingIDIsSkippedAndRemoved(t *testing.T) {
	e := newEnv(t)
	e.apiJob("real", nil)
	e.rdb.ZAdd(e.ctx, "jobs:pending", redis.Z{Score: 9e16, Member: "ghost"}) // ranks first, no hash
	if id := e.claimID(e.caps(slotCaps{})); id != "real" {
		t.Fatalf("claimed %q, want real", id)
	}
	if e.rdb.ZScore(e.ctx, "jobs:pending", "ghost").Err() != redis.Nil {
		t.Fatal("dangling id is still in jobs:pending")
	}
}

func TestNoStarvationBehindUnclaimableJobs(t *testing.T) {
	e := newEnv(t)
	base := time.Now().Add(-time.Hour)
	for i := range 150 {
		e.apiJob(fmt.Sprintf("other-%d", i), map[string]string{"service_required": "comfyui", "created_at": iso(base)})
	}
	e.apiJob("mine", map[string]string{"created_at": iso(base.Add(time.Minute))})
	if id := e.claimID(e.caps(slotCaps{})); id != "mine" {
		t.Fatalf("claimed %q, want the job behind 150 unclaimable ones", id)
	}
	if n := e.rdb.ZCard(e.ctx, "jobs:pending").Val(); n != 150 {
		t.Fatalf("jobs:pending holds %d, want the 150 others untouched", n)
	}
}

// One call does a bounded amount of work; the next resumes where it stopped, so a job behind
// more unclaimable jobs than one call may look at is reached by a slot that claims again at
// once while the cursor is non-zero, and every call moves the cursor forward.
func TestTailWindowReachesJobsBeyondTheLimit(t *testing.T) {
	e := newEnv(t)
	base := time.Now().Add(-time.Hour)
	for i := range 250 {
		e.apiJob(fmt.Sprintf("other-%d", i), map[string]string{"service_required": "comfyui", "created_at": iso(base)})
	}
	e.apiJob("mine", map[string]string{"created_at": iso(base.Add(time.Minute))})
	caps := e.caps(slotCaps{})
	var cursor int64
	for call := 1; ; call++ {
		j, next, err := e.b.Claim(e.ctx, caps, 100, cursor)
		if err != nil {
			t.Fatal(err)
		}
		if j != nil {
			if j.ID != "mine" || next != 0 {
				t.Fatalf("claimed %q, next cursor %d", j.ID, next)
			}
			return
		}
		if next <= cursor {
			t.Fatalf("call %d: the cursor went from %d to %d before the job was found", call, cursor, next)
		}
		cursor = next
	}
}

func TestCapabilitiesNeverCarryNull(t *testing.T) {
	c := broker.Capabilities{WorkerID: "w", Custom: map[string]any{"a": nil, "b": map[string]any{"x": nil, "y": 1}, "worker_id": "evil"}}
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, bad := range []string{"null", `"a"`, "evil"} {
		if strings.Contains(s, bad) {
			t.Errorf("capabilities %s contain %s", s, bad)
		}
	}
	if !strings.Contains(s, `"job_service_required_map":[]`) || !strings.Contains(s, `"y":1`) {
		t.Errorf("capabilities %s lack the service map or custom keys", s)
	}
	if _, err := (broker.Capabilities{}).Encode(); err == nil {
		t.Error("capabilities without worker_id were accepted")
	}
}

func TestServiceCacheIsKeptTidy(t *testing.T) {
	e := newEnv(t)
	base := time.Now().Add(-time.Hour)
	for i := range 5 {
		e.apiJob(fmt.Sprintf("other-%d", i), map[string]string{"service_required": "comfyui", "created_at": iso(base.Add(time.Duration(i) * 10 * time.Second))})
	}
	e.apiJob("mine", map[string]string{"created_at": iso(base.Add(time.Minute))})
	if id := e.claimID(e.caps(slotCaps{})); id != "mine" {
		t.Fatalf("claimed %q", id)
	}
	cache := e.rdb.HGetAll(e.ctx, broker.KeyServiceCache).Val()
	if len(cache) != 5 || cache["other-0"] != "comfyui" {
		t.Fatalf("service cache = %v, want the 5 unclaimed jobs and not the claimed one", cache)
	}
	// The API cancels two pending jobs: ZREM from jobs:pending only.
	e.rdb.ZRem(e.ctx, "jobs:pending", "other-1", "other-3")
	n, err := e.b.PruneServiceCache(e.ctx)
	if err != nil || n != 2 {
		t.Fatalf("prune = %d, %v; want 2", n, err)
	}
	if e.rdb.HLen(e.ctx, broker.KeyServiceCache).Val() != 3 {
		t.Error("prune removed entries of jobs still pending")
	}
	// A job whose hash vanished after it was cached is still removed when a worker for its
	// service reaches it.
	e.rdb.Del(e.ctx, "job:other-0")
	if id := e.claimID(e.caps(slotCaps{services: []string{"comfyui"}})); id != "other-2" {
		t.Fatalf("claimed %q, want other-2 after skipping the vanished other-0", id)
	}
	if e.rdb.ZScore(e.ctx, "jobs:pending", "other-0").Err() != redis.Nil {
		t.Error("vanished job still pending")
	}
}

func TestPendingFor(t *testing.T) {
	e := newEnv(t)
	for i := range 7 {
		e.apiJob(fmt.Sprintf("a-%d", i), nil)
	}
	for i := range 5 {
		e.apiJob(fmt.Sprintf("b-%d", i), map[string]string{"service_required": "comfyui"})
	}
	n, complete, err := e.b.PendingFor(e.ctx, []string{"simulation", "mock"}, 1000)
	if err != nil || n != 7 || !complete {
		t.Fatalf("PendingFor = %d, %v, %v; want 7, complete", n, complete, err)
	}
	if _, complete, _ := e.b.PendingFor(e.ctx, []string{"comfyui"}, 10); complete {
		t.Error("a count limited to 10 of 12 jobs says it is complete")
	}
}
