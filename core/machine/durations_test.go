package machine_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/internal/redistest"
)

// The machine reads the fleet's expected durations of its services (jobs:stats:duration) into
// its state: /status lists them as expected_durations and the console's snapshot carries them;
// another service's are left out.
func TestExpectedDurationsReachStatusAndTheConsole(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	defer rdb.Close()
	if err := rdb.HSet(context.Background(), broker.KeyDurationStats,
		"simulation|sdxl", "42000,120", "simulation|", "1200,40", "comfyui|flux", "90000,9").Err(); err != nil {
		t.Fatal(err)
	}
	h := startWithRedis(t, srv.URL, map[string]string{"WORKER_CONNECTORS": "simulation:1"})
	h.waitFor("the expected durations in the console's snapshot", func() bool {
		return len(h.m.Control().Snapshot().Durations) == 2
	})
	d := h.m.Control().Snapshot().Durations
	if d[0].Service != "simulation" || d[0].Model != "sdxl" || d[0].EWMAMS != 42000 || d[0].Count != 120 ||
		d[1].Model != "" || d[1].EWMAMS != 1200 || d[1].Count != 40 {
		t.Fatalf("console snapshot durations %+v", d)
	}
	resp, err := http.Get("http://" + h.m.HTTPAddr() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Durations []struct {
			Service string `json:"service"`
			Model   string `json:"model"`
			Count   int64  `json:"count"`
		} `json:"expected_durations"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if len(body.Durations) != 2 || body.Durations[0].Model != "sdxl" || body.Durations[0].Count != 120 {
		t.Fatalf("/status expected_durations %+v", body.Durations)
	}
}
