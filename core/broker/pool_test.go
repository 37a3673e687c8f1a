package broker_test

import (
	"testing"

	"github.com/emp-job-queue/machine/core/broker"
)

// requirements.pool is a hard match on the pool a machine advertises (MACHINE_POOL); a job
// without it matches every pool, and a machine without a pool takes no job that names one.
func TestPoolIsAHardMatch(t *testing.T) {
	e := newEnv(t)
	inPool := func(pool string) []byte {
		return e.caps(slotCaps{id: "m-" + pool + "-worker-simulation-0", mutate: func(c *broker.Capabilities) { c.Pool = pool }})
	}
	fast, heavy, none := inPool("fast"), inPool("heavy"), e.caps(slotCaps{})
	e.apiJob("for-heavy", map[string]string{"priority": "90", "requirements": `{"pool":"heavy"}`})
	if id := e.claimID(fast); id != "" {
		t.Fatalf("the fast pool claimed %q, a job for the heavy pool", id)
	}
	if id := e.claimID(none); id != "" {
		t.Fatalf("a machine without a pool claimed %q, a job for the heavy pool", id)
	}
	if id := e.claimID(heavy); id != "for-heavy" {
		t.Fatalf("the heavy pool claimed %q", id)
	}
	e.apiJob("anywhere", nil)
	if id := e.claimID(fast); id != "anywhere" {
		t.Fatalf("the fast pool claimed %q, want the job without a pool requirement", id)
	}
}
