package httpapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/httpapi"
	"github.com/emp-job-queue/machine/core/metrics"
	"github.com/emp-job-queue/machine/core/state"
)

// /ready answers 503 with the reason while a slot's claims keep failing, even though the
// broker answers pings.
func TestReadyReportsFailingClaims(t *testing.T) {
	store := state.New("m", "", []state.Slot{{ID: "m-worker-test-0"}, {ID: "m-worker-test-1"}})
	store.SetPhase(state.Ready)
	store.BrokerReachable(true, nil)
	srv := httptest.NewServer(httpapi.New(httpapi.Params{Store: store, Metrics: metrics.New().Handler()}))
	defer srv.Close()
	ready := func() (int, map[string]any) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/ready")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	if code, body := ready(); code != http.StatusOK || body["ready"] != true {
		t.Fatalf("/ready = %d %v, want ready", code, body)
	}
	store.ClaimFailing("m-worker-test-1", "claim: a broker script failed inside Redis: WRONGTYPE")
	code, body := ready()
	reason, _ := body["reason"].(string)
	if code != http.StatusServiceUnavailable || body["ready"] != false ||
		!strings.Contains(reason, "1 of 2 slots cannot claim jobs; m-worker-test-1: claim: a broker script failed inside Redis") {
		t.Fatalf("/ready = %d %v, want 503 with the reason", code, body)
	}
	store.ClaimFailing("m-worker-test-1", "")
	if code, body := ready(); code != http.StatusOK || body["ready"] != true {
		t.Fatalf("/ready = %d %v after the slot claims again", code, body)
	}
}
