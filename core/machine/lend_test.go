package machine

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/internal/redistest"
)

// mayLend decides, from the machine's slots, whether the claim may lend an idle slot to an aged
// job of another pool: with MACHINE_POOL_RESERVE=1 and two slots, only while both are idle. The
// claim script, against a real Redis, follows it; with no reserve every idle slot lends.
func TestMayLendKeepsTheReservedSlotsForThePool(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	defer rdb.Close()
	ctx := context.Background()
	b := broker.New(rdb)
	// Plain simulation jobs are expected to run 10 minutes: they do not fit the fast pool.
	if err := rdb.HSet(ctx, broker.KeyDurationStats, "simulation|", "600000,5").Err(); err != nil {
		t.Fatal(err)
	}
	caps, err := broker.Capabilities{WorkerID: "box-worker-simulation-0", MachineID: "box", Services: []string{"simulation"},
		Pool: "fast", CustomerAccess: broker.CustomerAccess{Isolation: "loose"}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	agedJob := func() string {
		t.Helper()
		id, err := b.Submit(ctx, broker.JobSpec{Service: "simulation", Payload: json.RawMessage(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		// Waited 40 s: past the 30 s aging threshold, short of the 300 s after which it goes in
		// plain priority order whatever the reserve.
		aged := time.Now().Add(-40 * time.Second).UTC().Format("2006-01-02T15:04:05.000Z")
		if err := rdb.HSet(ctx, "job:"+id, "created_at", aged).Err(); err != nil {
			t.Fatal(err)
		}
		return id
	}
	claim := func() string {
		t.Helper()
		j, _, err := b.Claim(ctx, caps, 1000, 0)
		if err != nil {
			t.Fatal(err)
		}
		if j == nil {
			return ""
		}
		return j.ID
	}

	for _, reserve := range []int{1, 0} {
		store := state.New("box", "fast", []state.Slot{{ID: "s0", Connector: "simulation"}, {ID: "s1", Connector: "simulation"}})
		m := &Machine{cfg: &config.Config{PoolReserve: reserve}, store: store}
		b.SetRouting(broker.Routing{Pool: "fast", PoolMax: 10 * time.Second, Aging: 30 * time.Second, MayLend: m.mayLend})

		first := agedJob()
		if !m.mayLend() {
			t.Fatalf("reserve %d, both slots idle: mayLend says no", reserve)
		}
		if got := claim(); got != first {
			t.Fatalf("reserve %d, both slots idle: claimed %q, want the aged job %s", reserve, got, first)
		}
		store.JobClaimed("s0", first, "simulation")

		second := agedJob()
		if lend := m.mayLend(); lend != (reserve == 0) {
			t.Fatalf("reserve %d, one slot idle: mayLend says %v", reserve, lend)
		}
		want := map[bool]string{true: second, false: ""}[reserve == 0]
		if got := claim(); got != want {
			t.Fatalf("reserve %d, one slot idle: claimed %q, want %q", reserve, got, want)
		}
		if reserve == 1 {
			store.JobEnded("s0", job.Completed, "")
			if got := claim(); got != second {
				t.Fatalf("reserve 1, both slots idle again: claimed %q, want the aged job %s", got, second)
			}
		}
	}
}
