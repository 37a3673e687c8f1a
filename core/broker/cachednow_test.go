package broker_test

import (
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/broker"
)

// A model cache's models change while the machine runs: the claim asks CachedNow every time,
// and an empty answer prefers nothing (not the capabilities' models, which list what the slot
// can serve, downloaded or not).
func TestAffinityFollowsCachedNow(t *testing.T) {
	e := newEnv(t)
	var cached map[string][]string
	e.b.SetRouting(broker.Routing{AffinityK: 8, AffinityWindow: 10 * time.Second,
		CachedNow: func() map[string][]string { return cached }})
	caps := e.caps(slotCaps{id: "m1-worker-simulation-0", services: []string{"simulation"}, mutate: func(c *broker.Capabilities) {
		c.Models = map[string][]string{"simulation": {"a", "b"}}
	}})
	now := time.Now()
	young := func(id, prio, model string) {
		e.apiJob(id, map[string]string{"priority": prio, "requirements": `{"models":["` + model + `"]}`, "created_at": iso(now)})
	}
	e.apiJob("n1", map[string]string{"priority": "95", "created_at": iso(now)})
	young("a1", "90", "a")
	young("b1", "80", "b")
	if got := e.claimID(caps); got != "n1" {
		t.Fatalf("nothing cached: claimed %q, want n1 in priority order", got)
	}
	cached = map[string][]string{"simulation": {"b"}}
	if got := e.claimID(caps); got != "b1" {
		t.Fatalf("b cached now: claimed %q, want b1 over a1 of higher priority", got)
	}
}
