package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/core/httpapi"
	"github.com/emp-job-queue/machine/core/metrics"
	"github.com/emp-job-queue/machine/core/state"
)

// /status shows the connectors and the layout changes next to the last hour's resources.
func TestStatusShowsConnectorsChangesAndResources(t *testing.T) {
	store := state.New("m", "", nil)
	store.SetConnector(state.Connector{Name: "simulation", State: state.ConnectorEnabled, Slots: 2})
	store.SetChange(state.Change{ID: 1, What: "enable simulation", State: state.ChangeDone})
	wh := 1.5
	store.SetCosts([]state.ServiceCost{{Service: "simulation", Jobs: 3, WhMean: &wh}})
	store.SetDurations([]state.Duration{{Service: "simulation", Model: "big", EWMA: 1500 * time.Millisecond, Count: 4}})
	srv := httptest.NewServer(httpapi.New(httpapi.Params{Store: store, Metrics: metrics.New().Handler()}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Connectors []map[string]any `json:"connectors"`
		Changes    []map[string]any `json:"changes"`
		Resources  []map[string]any `json:"resources_last_hour"`
		Durations  []map[string]any `json:"expected_durations"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if len(body.Connectors) != 1 || body.Connectors[0]["state"] != "enabled" ||
		len(body.Changes) != 1 || body.Changes[0]["state"] != "done" ||
		len(body.Resources) != 1 || body.Resources[0]["jobs"] != 3.0 || body.Resources[0]["gpu_energy_wh_mean"] != 1.5 {
		t.Fatalf("/status = %+v", body)
	}
	if d := body.Durations; len(d) != 1 || d[0]["service"] != "simulation" || d[0]["model"] != "big" ||
		d[0]["ewma_ms"] != 1500.0 || d[0]["count"] != 4.0 {
		t.Fatalf("/status expected_durations = %v", d)
	}
}

// With the token, the connector route runs the console's command and says which change it queued.
func TestConnectorRouteRunsTheCommand(t *testing.T) {
	var got control.Command
	srv := httptest.NewServer(httpapi.New(httpapi.Params{
		Store: state.New("m", "", nil), Metrics: metrics.New().Handler(), Token: "t",
		Do: func(_ context.Context, c control.Command) control.Result {
			got = c
			return control.Result{OK: true, Message: "queued", Change: 7}
		},
	}))
	defer srv.Close()
	req, _ := http.NewRequest("POST", srv.URL+"/connectors/mock?action=concurrency&count=3", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != 200 || body["change"] != 7.0 || got != (control.Command{Op: control.SetConcurrency, Connector: "mock", Count: 3}) {
		t.Fatalf("answer %d %v, command %+v", resp.StatusCode, body, got)
	}
}
