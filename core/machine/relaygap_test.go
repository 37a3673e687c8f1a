package machine_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/internal/redistest"
)

// A job submitted while no relay listens (the leases are held by a machine that is gone) is
// claimed as soon as this machine becomes a relay and subscribes, not at the next fallback poll
// (10 minutes here).
func TestJobSubmittedBeforeARelaySubscribesIsClaimed(t *testing.T) {
	srv := redistest.Start(t)
	h0 := startWithRedis(t, srv.URL, map[string]string{"WORKER_CONNECTORS": "mock", "MACHINE_ID": "gone"})
	h0.stop() // its relay leases stay until they expire
	ctx := context.Background()
	for i := range broker.RelayCount {
		key := broker.KeyRelayPrefix + strconv.Itoa(i)
		if err := h0.rdb.Set(ctx, key, "a machine that is gone", 3*time.Second).Err(); err != nil {
			t.Fatal(err)
		}
	}
	h := startWithRedis(t, srv.URL, map[string]string{"WORKER_CONNECTORS": "mock"})
	id := h.submit("mock", `{"delay_ms":1}`) // no relay hears it
	h.waitFor("the job to be claimed once this machine relays", func() bool { return h.status(id) == "completed" })
}
