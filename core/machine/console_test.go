package machine_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/core/plan"
	"github.com/emp-job-queue/machine/core/state"
)

func TestConsoleAttachDetachLeavesCoreUntouched(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation"})
	before := h.m.Store().Snapshot()
	sock := h.m.ControlSocket()
	for round := 1; round <= 2; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		client, err := control.Dial(ctx, sock, 0)
		if err != nil {
			t.Fatal(err)
		}
		snap := <-client.Updates()
		if snap.Machine.ID != "test-box" || snap.Machine.Phase != "ready" || len(snap.Connectors) != 1 || snap.Connectors[0].Slots != 2 {
			t.Fatalf("round %d: snapshot %+v", round, snap.Machine)
		}
		res, err := client.Do(ctx, control.Command{Op: control.Logs, Service: "nope"})
		if err != nil || res.OK || !strings.Contains(res.Error, "nope") {
			t.Errorf("round %d: logs of an unknown service = %+v, %v", round, res, err)
		}
		if err := client.Close(); err != nil {
			t.Logf("close: %v", err)
		}
		cancel()
		id := h.submit("simulation", `{"duration_ms":10}`)
		h.waitFor("a job after detaching", func() bool { return h.status(id) == "completed" })
	}
	after := h.m.Store().Snapshot()
	if after.Phase != state.Ready || len(after.Slots) != len(before.Slots) || after.Paused {
		t.Errorf("core changed: phase %s, %d slots, paused %v", after.Phase, len(after.Slots), after.Paused)
	}
	if _, err := control.Dial(context.Background(), sock+".missing", 0); err == nil || !strings.Contains(err.Error(), sock+".missing") {
		t.Errorf("dial of a missing socket: %v", err)
	}
}

func TestDrainAndResumeFromTheConsole(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation"})
	core := h.m.Control()
	if res := core.Do(context.Background(), control.Command{Op: control.Drain}); !res.OK {
		t.Fatal(res.Error)
	}
	id := h.submit("simulation", `{"duration_ms":10}`)
	time.Sleep(300 * time.Millisecond)
	if h.status(id) != "pending" {
		t.Fatalf("a drained machine claimed a job (%s)", h.status(id))
	}
	if snap := core.Snapshot(); !snap.Machine.Paused || snap.Connectors[0].State != "draining" {
		t.Errorf("snapshot while drained: %+v %+v", snap.Machine, snap.Connectors)
	}
	if res := core.Do(context.Background(), control.Command{Op: control.Resume}); !res.OK {
		t.Fatal(res.Error)
	}
	h.waitFor("the job after resuming", func() bool { return h.status(id) == "completed" })
}

func TestConnectorsChangeLive(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation:1", "MACHINE_API_TOKEN": "tok", "MACHINE_DRAIN_TIMEOUT": "5s"})
	ctx := context.Background()
	core := h.m.Control()
	mockJob := h.submit("mock", `{"delay_ms":10}`)
	time.Sleep(200 * time.Millisecond)
	if h.status(mockJob) != "pending" {
		t.Fatal("a machine without the mock connector took a mock job")
	}
	if res := core.Do(ctx, control.Command{Op: control.EnableConnector, Connector: "mock"}); !res.OK {
		t.Fatal(res.Error)
	}
	h.waitFor("the new connector to take the waiting job", func() bool { return h.status(mockJob) == "completed" })
	if h.rdb.Exists(ctx, "worker:test-box-worker-mock-0").Val() != 1 {
		t.Error("the new slot is not registered")
	}
	if !slices.ContainsFunc(h.m.Plan().Slots, func(s plan.Slot) bool { return s.ID == "test-box-worker-mock-0" }) {
		t.Error("the plan (and so machine:status) does not show the new slot")
	}

	// Disable mock while one of its jobs runs: the job finishes, then the slot goes.
	long := h.submit("mock", `{"delay_ms":800}`)
	h.waitFor("the long mock job to run", func() bool { return h.status(long) == "in_progress" })
	res := core.Do(ctx, control.Command{Op: control.DisableConnector, Connector: "mock"})
	if !res.OK || !strings.Contains(res.Message, "draining") {
		t.Fatalf("disable = %+v", res)
	}
	h.waitFor("the connector to show as draining", func() bool {
		c := core.Snapshot().Connectors
		return c[len(c)-1].State == state.ConnectorDraining
	})
	// Checked against the layout the queued change leaves: mock will not be enabled.
	if again := core.Do(ctx, control.Command{Op: control.DisableConnector, Connector: "mock"}); again.OK || !strings.Contains(again.Error, "not enabled") {
		t.Errorf("a second disable during the drain = %+v", again)
	}
	h.waitFor("the running job to finish during the drain", func() bool { return h.status(long) == "completed" })
	h.waitFor("the mock slot to go", func() bool {
		c := h.m.Control().Snapshot().Connectors
		return len(c) == 2 && c[1].Name == "mock" && c[1].State == "disabled" && c[1].Slots == 0
	})
	if h.rdb.Exists(ctx, "worker:test-box-worker-mock-0").Val() != 0 {
		t.Error("the removed slot is still registered")
	}
	later := h.submit("mock", `{"delay_ms":10}`)
	time.Sleep(300 * time.Millisecond)
	if h.status(later) != "pending" {
		t.Error("a disabled connector still claims")
	}

	// Concurrency over HTTP, with and without the token.
	url := "http://" + h.m.HTTPAddr() + "/connectors/simulation?action=concurrency&count=2"
	resp, _ := http.Post(url, "", nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without the token: %d", resp.StatusCode)
	}
	resp.Body.Close()
	req, _ := http.NewRequest(http.MethodPost, url, nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("with the token: %v %v %s", resp.StatusCode, err, b)
	}
	resp.Body.Close()
	h.waitFor("two simulation slots", func() bool { return len(h.m.Store().Snapshot().Slots) == 2 })
	// Beyond the GPUs: refused with the reason.
	if res := core.Do(ctx, control.Command{Op: control.SetConcurrency, Connector: "simulation", Count: 3}); res.OK || !strings.Contains(res.Error, "GPU") {
		t.Errorf("concurrency beyond the GPUs = %+v", res)
	}

	// A connector that needs a service: the service is installed (found, for the browser) and
	// started, its slot claims once it is ready; disabling it stops the service no other
	// connector needs.
	if res := core.Do(ctx, control.Command{Op: control.EnableConnector, Connector: "playwright"}); !res.OK || !strings.Contains(res.Message, "service") {
		t.Fatalf("enable playwright = %+v", res)
	}
	page := h.submit("playwright", `{"type":"html","html":"<p>live</p>","width":100,"height":50}`)
	h.waitFor("a render through the live-added browser", func() bool { return h.status(page) == "completed" })
	if res := core.Do(ctx, control.Command{Op: control.DisableConnector, Connector: "playwright"}); !res.OK {
		t.Fatalf("disable playwright = %+v", res)
	}
	h.waitFor("the browser service to go", func() bool {
		_, ok := h.m.Store().Snapshot().Service("browser")
		return !ok && len(core.Snapshot().Services) == 0
	})
}
