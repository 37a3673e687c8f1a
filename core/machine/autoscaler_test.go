package machine_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/internal/testutil"
)

// With MACHINE_AUTOSCALE on and mock allowed but not configured, mock jobs make the machine
// enable mock through the reconciler (pre-warm), its slot completes them, and once the queue is
// empty and the connector idle past MACHINE_SERVICE_IDLE_TTL it is disabled again. Each decision
// is visible with its reason in the state store, /status and the metrics.
func TestAutoscalerPrewarmsAndEvicts(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation:1", "MACHINE_AUTOSCALE": "on",
		"MACHINE_ALLOWED_CONNECTORS": "mock", "MACHINE_SERVICE_IDLE_TTL": "300ms", "MACHINE_AUTOSCALE_COOLDOWN": "100ms",
		"MACHINE_GPU_SAMPLE_INTERVAL_MS": "100"})
	if len(h.m.Plan().SlotsFor("mock")) != 0 {
		t.Fatal("mock runs at boot; it should start only on demand")
	}
	ids := []string{h.submit("mock", `{}`), h.submit("mock", `{}`), h.submit("mock", `{}`)}
	for _, id := range ids {
		h.waitFor("the mock job "+id+" to complete", func() bool { return h.status(id) == "completed" })
	}
	snap := h.m.Store().Snapshot()
	if len(snap.Autoscaler.Decisions) == 0 || snap.Autoscaler.Decisions[0].Kind != "enable" ||
		snap.Autoscaler.Decisions[0].Connector != "mock" || !strings.Contains(snap.Autoscaler.Decisions[0].Reason, "pre-warm") ||
		snap.Autoscaler.Decisions[0].Change == 0 {
		t.Fatalf("the first decision = %+v, want enable mock (pre-warm) queued as a change", snap.Autoscaler.Decisions)
	}
	h.waitFor("the idle mock connector to be disabled", func() bool {
		c, ok := h.m.Store().Snapshot().Connector("mock")
		return ok && c.State == state.ConnectorDisabled
	})
	if len(h.m.Plan().SlotsFor("mock")) != 0 || len(h.m.Plan().SlotsFor("simulation")) != 1 {
		t.Errorf("after the idle eviction the plan has %+v", h.m.Plan().Slots)
	}
	ds := h.m.Store().Snapshot().Autoscaler.Decisions
	last := ds[len(ds)-1]
	if last.Kind != "disable" || last.Connector != "mock" || !strings.Contains(last.Reason, "idle") {
		t.Errorf("the last decision = %+v, want disable mock (idle)", last)
	}
	for _, d := range ds {
		if d.Connector == "simulation" {
			t.Errorf("the pinned simulation connector was changed: %+v", d)
		}
	}
	body := get(t, "http://"+h.m.HTTPAddr()+"/status")
	if !strings.Contains(body, `"autoscaler":{`) || !strings.Contains(body, `pre-warm`) {
		t.Errorf("/status does not show the autoscaler's decisions:\n%s", grep(body, "autoscaler"))
	}
	metrics := get(t, "http://"+h.m.HTTPAddr()+"/metrics")
	if !strings.Contains(metrics, `machine_autoscale_decisions_total{connector="mock",kind="enable"} 1`) ||
		!strings.Contains(metrics, `machine_autoscale_decisions_total{connector="mock",kind="disable"} 1`) {
		t.Errorf("the metrics lack the decisions:\n%s", grep(metrics, "autoscale"))
	}
	if a := h.m.Control().Snapshot().Autoscaler; !a.On || a.Last == nil || a.Last.What != "disable mock" || a.Count < 2 {
		t.Errorf("the console's autoscaler = %+v", a)
	}
	// A new mock job after the eviction brings it back.
	id := h.submit("mock", `{}`)
	h.waitFor("the mock job after the eviction to complete", func() bool { return h.status(id) == "completed" })
}

// With MACHINE_AUTOSCALE=off the layout stays as configured: mock jobs wait, nothing is
// enabled, and /status says why the autoscaler does nothing.
func TestAutoscalerOffChangesNothing(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation:1", "MACHINE_AUTOSCALE": "off",
		"MACHINE_ALLOWED_CONNECTORS": "mock", "MACHINE_GPU_SAMPLE_INTERVAL_MS": "100"})
	waiting := h.submit("mock", `{}`)
	// A simulation job submitted after the mock one completes: the machine is running rounds.
	done := h.submit("simulation", `{"duration_ms":10}`)
	h.waitFor("the simulation job to complete", func() bool { return h.status(done) == "completed" })
	snap := h.m.Store().Snapshot()
	if _, ok := snap.Connector("mock"); ok || len(h.m.Plan().SlotsFor("mock")) != 0 {
		t.Errorf("mock was touched with the autoscaler off: %+v", snap.Connectors)
	}
	if snap.Autoscaler.On || len(snap.Autoscaler.Decisions) != 0 || !strings.Contains(snap.Autoscaler.Note, "MACHINE_AUTOSCALE=off") {
		t.Errorf("the autoscaler's state = %+v", snap.Autoscaler)
	}
	if st := h.status(waiting); st != "pending" {
		t.Errorf("the mock job is %q, want still pending", st)
	}
	if body := get(t, "http://"+h.m.HTTPAddr()+"/status"); !strings.Contains(body, `"on":false`) {
		t.Errorf("/status does not say the autoscaler is off:\n%s", grep(body, "autoscaler"))
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Pre-warm and idle eviction with a real supervised service: ollama is allowed but not
// configured; text_generation jobs waiting in Redis make the autoscaler enable it, which
// installs it (the in-repo fake ollama binary, its model pulled) and starts `ollama serve` as a
// child process whose port answers; the jobs complete on it; once it is idle past
// MACHINE_SERVICE_IDLE_TTL the autoscaler disables it, and the child process is gone and its
// port closed.
func TestAutoscalerPrewarmsAndEvictsARealService(t *testing.T) {
	dir := t.TempDir()
	bin := fakeBinary(t, "../../internal/fakeollama/cmd", dir, "ollama")
	port := testutil.Port(t)
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation:1", "MACHINE_AUTOSCALE": "on",
		"MACHINE_ALLOWED_CONNECTORS": "ollama", "MACHINE_SERVICE_IDLE_TTL": "1s", "MACHINE_AUTOSCALE_COOLDOWN": "100ms",
		"MACHINE_GPU_SAMPLE_INTERVAL_MS": "100", "OLLAMA_BIN": bin, "OLLAMA_BASE_PORT": fmt.Sprint(port),
		"OLLAMA_DEFAULT_MODELS": "llama3.2", "OLLAMA_MODELS": filepath.Join(dir, "models")})
	if _, ok := h.m.Store().Snapshot().Service("ollama"); ok || serviceAnswers(port) {
		t.Fatal("ollama runs at boot; it should start only on demand")
	}
	ids := []string{h.submit("text_generation", `{"prompt":"one","max_tokens":3}`), h.submit("text_generation", `{"prompt":"two","max_tokens":3}`)}
	var pid int
	h.waitFor("the pre-warmed ollama service to be ready", func() bool {
		st, ok := h.m.Store().Snapshot().Service("ollama")
		pid = st.PID
		return ok && st.State == "ready" && st.PID > 0
	})
	if err := syscall.Kill(pid, 0); err != nil || !serviceAnswers(port) {
		t.Fatalf("the ollama child (pid %d) is not running (%v) or its port %d does not answer", pid, err, port)
	}
	for _, id := range ids {
		h.waitFor("job "+id, func() bool { return h.status(id) == "completed" })
	}
	if ds := h.m.Store().Snapshot().Autoscaler.Decisions; len(ds) == 0 || ds[0].Kind != "enable" || ds[0].Connector != "ollama" ||
		!strings.Contains(ds[0].Reason, "pre-warm") {
		t.Fatalf("the first decision = %+v, want enable ollama (pre-warm)", ds)
	}
	h.waitFor("the idle ollama connector to be disabled and its service removed", func() bool {
		snap := h.m.Store().Snapshot()
		c, ok := snap.Connector("ollama")
		_, running := snap.Service("ollama")
		return ok && c.State == state.ConnectorDisabled && !running
	})
	h.waitFor("the ollama child process to exit", func() bool { return syscall.Kill(pid, 0) == syscall.ESRCH })
	if serviceAnswers(port) {
		t.Errorf("port %d still answers after the eviction", port)
	}
	ds := h.m.Store().Snapshot().Autoscaler.Decisions
	if last := ds[len(ds)-1]; last.Kind != "disable" || last.Connector != "ollama" || !strings.Contains(last.Reason, "MACHINE_SERVICE_IDLE_TTL") {
		t.Errorf("the last decision = %+v, want disable ollama (idle)", last)
	}
}

// serviceAnswers says whether an HTTP server answers on the local port.
func serviceAnswers(port int) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return true
}
