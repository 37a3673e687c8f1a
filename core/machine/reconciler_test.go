package machine_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/core/plan"
	"github.com/emp-job-queue/machine/core/state"
)

// change waits for a queued change to end and returns its record.
func (h *harness) change(id uint64) state.Change {
	h.t.Helper()
	var ch state.Change
	h.waitFor(fmt.Sprintf("change %d to end", id), func() bool {
		var ok bool
		ch, ok = h.m.Store().Snapshot().Change(id)
		return ok && (ch.State == state.ChangeDone || ch.State == state.ChangeFailed)
	})
	return ch
}

// A connector whose service does not install (here git cannot clone ComfyUI) fails visibly, in
// the state store and in the console's snapshot, and leaves what ran before running.
func TestFailedInstallKeepsTheLayout(t *testing.T) {
	missing := "file://" + filepath.Join(t.TempDir(), "no-such-repo")
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation:1", "COMFYUI_REPO_URL": missing,
		"COMFYUI_DIR": filepath.Join(t.TempDir(), "ComfyUI")})
	ctx := context.Background()
	core := h.m.Control()
	before := h.m.Plan()
	res := core.Do(ctx, control.Command{Op: control.EnableConnector, Connector: "comfyui", Count: 1})
	if !res.OK || res.Change == 0 || !strings.Contains(res.Message, "installing") {
		t.Fatalf("enable comfyui = %+v", res)
	}
	ch := h.change(res.Change)
	if ch.State != state.ChangeFailed || !strings.Contains(ch.Error, "ComfyUI") {
		t.Fatalf("the change = %+v, want failed with the install's reason", ch)
	}
	conn, _ := h.m.Store().Snapshot().Connector("comfyui")
	if conn.State != state.ConnectorFailed || conn.Error == "" || conn.Slots != 0 {
		t.Errorf("the store's comfyui = %+v", conn)
	}
	snap := core.Snapshot()
	i := slices.IndexFunc(snap.Connectors, func(c control.Connector) bool { return c.Name == "comfyui" })
	if i < 0 || snap.Connectors[i].State != state.ConnectorFailed || !strings.Contains(snap.Connectors[i].Error, "ComfyUI") {
		t.Errorf("the console's connectors = %+v", snap.Connectors)
	}
	if j := slices.IndexFunc(snap.Changes, func(c control.Change) bool { return c.ID == res.Change }); j < 0 || snap.Changes[j].State != state.ChangeFailed {
		t.Errorf("the console's changes = %+v", snap.Changes)
	}
	if h.m.Plan() != before || len(snap.Services) != 0 || h.rdb.Exists(ctx, "worker:test-box-worker-comfyui-0").Val() != 0 {
		t.Errorf("the failed change left something behind: plan %+v, services %+v", h.m.Plan(), snap.Services)
	}
	resp, err := http.Get("http://" + h.m.HTTPAddr() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"state":"failed"`) || !strings.Contains(string(body), `"what":"enable comfyui with 1 slot(s)"`) {
		t.Errorf("/status does not show the failed change:\n%s", body)
	}
	id := h.submit("simulation", `{"duration_ms":10}`)
	h.waitFor("the simulation slot to keep working", func() bool { return h.status(id) == "completed" })
}

// Two changes asked for at once apply one after the other: the second waits until the drain
// of the first is over.
func TestOverlappingChangesSerialize(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation:1", "MACHINE_DRAIN_TIMEOUT": "30s"})
	ctx := context.Background()
	core := h.m.Control()
	long := h.submit("simulation", `{"duration_ms":1500,"steps":3}`)
	h.waitFor("the long job to run", func() bool { return h.status(long) == "in_progress" })
	first := core.Do(ctx, control.Command{Op: control.DisableConnector, Connector: "simulation"})
	second := core.Do(ctx, control.Command{Op: control.EnableConnector, Connector: "mock"})
	if !first.OK || !second.OK || !strings.Contains(second.Message, "after 1 change") {
		t.Fatalf("changes = %+v, %+v", first, second)
	}
	if h.status(long) == "in_progress" { // the first change cannot have ended: its drain waits for this job
		if ch, _ := h.m.Store().Snapshot().Change(second.Change); ch.State != state.ChangeQueued {
			t.Errorf("the second change is %s while the first drains", ch.State)
		}
		if h.rdb.Exists(ctx, "worker:test-box-worker-mock-0").Val() != 0 {
			t.Error("the second change started before the first ended")
		}
	}
	a, b := h.change(first.Change), h.change(second.Change)
	if a.State != state.ChangeDone || b.State != state.ChangeDone || b.StartedAt.Before(a.FinishedAt) {
		t.Errorf("changes: %+v then %+v", a, b)
	}
	if h.status(long) != "completed" {
		t.Errorf("the drained job is %s, want completed", h.status(long))
	}
	if !slices.ContainsFunc(h.m.Plan().Slots, func(s plan.Slot) bool { return s.ID == "test-box-worker-mock-0" }) || len(h.m.Plan().Slots) != 1 {
		t.Errorf("plan after both = %+v", h.m.Plan().Slots)
	}
}

// Shutdown lets the change in flight end (its drain finishes the running job) and fails the
// changes still queued, saying why.
func TestShutdownWaitsForTheChangeInFlight(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation:1,mock", "MACHINE_DRAIN_TIMEOUT": "30s"})
	ctx := context.Background()
	core := h.m.Control()
	long := h.submit("mock", `{"delay_ms":1500}`)
	h.waitFor("the mock job to run", func() bool { return h.status(long) == "in_progress" })
	inFlight := core.Do(ctx, control.Command{Op: control.DisableConnector, Connector: "mock"})
	queued := core.Do(ctx, control.Command{Op: control.SetConcurrency, Connector: "simulation", Count: 2})
	if !inFlight.OK || !queued.OK {
		t.Fatalf("changes = %+v, %+v", inFlight, queued)
	}
	h.waitFor("the disable to be applying", func() bool {
		ch, _ := h.m.Store().Snapshot().Change(inFlight.Change)
		return ch.State == state.ChangeApplying
	})
	h.stop()
	snap := h.m.Store().Snapshot()
	if ch, _ := snap.Change(inFlight.Change); ch.State != state.ChangeDone {
		t.Errorf("the change in flight ended as %+v", ch)
	}
	if ch, _ := snap.Change(queued.Change); ch.State != state.ChangeFailed || !strings.Contains(ch.Error, "stopping") {
		t.Errorf("the queued change ended as %+v", ch)
	}
	if h.status(long) != "completed" {
		t.Errorf("the job of the drained slot is %s, want completed", h.status(long))
	}
	if res := core.Do(ctx, control.Command{Op: control.EnableConnector, Connector: "mock"}); res.OK {
		t.Errorf("a change after the machine stopped = %+v", res)
	}
}

// Slot counts are bounded as in the configuration, whoever asks: console, control socket, HTTP.
func TestLiveChangesAreBounded(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation:1", "MACHINE_API_TOKEN": "tok"})
	ctx := context.Background()
	for _, cmd := range []control.Command{
		{Op: control.SetConcurrency, Connector: "mock", Count: 99999999},
		{Op: control.SetConcurrency, Connector: "mock", Count: 0},
		{Op: control.EnableConnector, Connector: "mock", Count: -3},
		{Op: control.EnableConnector, Connector: "openai"}, // no key
		{Op: control.EnableConnector, Connector: "nonsense"},
	} {
		if res := h.m.Control().Do(ctx, cmd); res.OK || res.Error == "" {
			t.Errorf("%+v accepted: %+v", cmd, res)
		}
	}
	client, err := control.Dial(ctx, h.m.ControlSocket(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if res, err := client.Do(ctx, control.Command{Op: control.SetConcurrency, Connector: "mock", Count: 99999999}); err != nil || res.OK || !strings.Contains(res.Error, "256") {
		t.Errorf("over the control socket: %+v %v", res, err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+h.m.HTTPAddr()+"/connectors/mock?action=concurrency&count=99999999", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), "256") {
		t.Errorf("over HTTP: %d %s", resp.StatusCode, body)
	}
	if n := len(h.m.Store().Snapshot().Slots); n != 1 {
		t.Errorf("%d slots after refused changes", n)
	}
}
