package machine_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/machine"
	"github.com/emp-job-queue/machine/internal/fakeopenai"
)

// logBuffer collects the machine's JSON log; slog writes from many goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// records returns the log records whose msg is msg.
func (l *logBuffer) records(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.b.String(), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil && r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// A burst of 429s from the (fake) OpenAI API makes the autoscaler take one slot off the openai
// connector, with the throttled reason, seen in the state store, /status, the metrics, the
// console's describe data and the JSON log; while the throttle lasts and jobs wait, it neither
// shrinks it again nor grows it back (the cooldown), and the jobs still complete.
func TestThrottledConnectorShrinksOnce(t *testing.T) {
	const key = "sk-throttle-test-key-123456"
	fake := fakeopenai.New(key)
	api := httptest.NewServer(fake.Handler())
	defer api.Close()
	logs := &logBuffer{}
	h := startWith(t, map[string]string{"WORKER_CONNECTORS": "openai:3", "OPENAI_API_KEY": key, "OPENAI_BASE_URL": api.URL + "/v1",
		"MACHINE_AUTOSCALE": "on", "MACHINE_AUTOSCALE_BOUNDS": "openai:1-4", "MACHINE_AUTOSCALE_COOLDOWN": "1h",
		"MACHINE_GPU_SAMPLE_INTERVAL_MS": "100"},
		machine.Options{Version: "test", Log: slog.New(slog.NewJSONHandler(logs, nil))})
	h.waitFor("the autoscaler's first round", func() bool { return !h.m.Store().Snapshot().Autoscaler.At.IsZero() })
	if _, ok := h.m.Store().Snapshot().Throttle("openai"); !ok {
		t.Fatal("the openai connector reports no throttle record once built")
	}

	fake.RateLimit(3)
	first := h.submit("openai_text", `{"prompt":"hi"}`)
	h.waitFor("the job to complete after the 429s", func() bool { return h.status(first) == "completed" })
	if n := fake.Answered429(); n != 3 {
		t.Fatalf("the fake answered %d 429s, want 3", n)
	}
	// The autoscaler reacts within a round of the first 429, while the job still retries.
	h.waitFor("the throttled decision", func() bool { return len(h.m.Store().Snapshot().Autoscaler.Decisions) > 0 })
	snap := h.m.Store().Snapshot()
	d := snap.Autoscaler.Decisions[0]
	if d.Kind != "resize" || d.Connector != "openai" || d.From != 3 || d.Count != 2 ||
		!strings.Contains(d.Reason, "throttled by the API (") || !strings.Contains(d.Reason, "× 429 in the last minute)") || d.Change == 0 {
		t.Fatalf("the decision = %+v, want resize openai 3→2, throttled by 429s", d)
	}
	h.waitFor("openai to run 2 slots", func() bool { return len(h.m.Plan().SlotsFor("openai")) == 2 })
	tr, _ := h.m.Store().Snapshot().Throttle("openai")
	if tr.RateLimitedTotal != 3 || tr.RetryAfter != time.Second || tr.Breaker != "closed" || len(tr.Errors) != 3 ||
		!strings.Contains(tr.Errors[0].Text, "rate_limit_exceeded") {
		t.Errorf("the throttle record = %+v", tr)
	}

	// Jobs wait (more than the 2 slots) while the throttle lasts: no growth, no second shrink.
	// Each job meets one more 429 first, so the record stays throttled.
	fake.RateLimit(4)
	var ids []string
	for range 4 {
		ids = append(ids, h.submit("openai_text", `{"prompt":"more"}`))
	}
	for _, id := range ids {
		h.waitFor("job "+id, func() bool { return h.status(id) == "completed" })
	}
	after := time.Now()
	h.waitFor("ten more autoscaler rounds", func() bool { return h.m.Store().Snapshot().Autoscaler.At.After(after.Add(time.Second)) })
	snap = h.m.Store().Snapshot()
	if len(snap.Autoscaler.Decisions) != 1 || len(h.m.Plan().SlotsFor("openai")) != 2 {
		t.Errorf("within the cooldown the autoscaler decided %+v (openai has %d slots); want the one shrink only",
			snap.Autoscaler.Decisions, len(h.m.Plan().SlotsFor("openai")))
	}

	body := get(t, "http://"+h.m.HTTPAddr()+"/status")
	if !strings.Contains(body, `"rate_limited_total":7`) || !strings.Contains(body, `"breaker":"closed"`) ||
		!strings.Contains(body, `× 429 in the last minute); one slot fewer`) {
		t.Errorf("/status lacks the throttle record or the decision:\n%s", grep(body, "throttle"))
	}
	if strings.Contains(body, key) || strings.Contains(body, key[:len(key)/2]) {
		t.Error("/status shows the OpenAI key")
	}
	metrics := get(t, "http://"+h.m.HTTPAddr()+"/metrics")
	if !strings.Contains(metrics, `machine_connector_throttled_total{connector="openai"} 7`) ||
		!strings.Contains(metrics, `machine_connector_breaker_open{connector="openai"} 0`) {
		t.Errorf("the metrics lack the throttle:\n%s", grep(metrics, "machine_connector_"))
	}
	if strings.Contains(metrics, `machine_connector_breaker_open{connector="simulation"}`) {
		t.Error("a connector that is no remote API has a breaker series")
	}
	var conn bool
	for _, c := range h.m.Control().Snapshot().Connectors {
		if c.Name == "openai" {
			conn = c.Throttle != nil && c.Throttle.RateLimitedTotal == 7 && c.Throttle.Breaker == "closed" && len(c.Throttle.Errors) == 5
		}
	}
	if !conn {
		t.Errorf("the console's openai connector lacks its throttle: %+v", h.m.Control().Snapshot().Connectors)
	}
	recs := logs.records("autoscaler decision")
	if len(recs) != 1 || recs[0]["connector"] != "openai" || !strings.Contains(fmt.Sprint(recs[0]["reason"]), "throttled") {
		t.Errorf("the JSON log's decisions: %v", recs)
	}

	// Five 500s in a row open the breaker: the record, the metric and the log say so.
	fake.FailNext(1000)
	h.submit("openai_text", `{"prompt":"down"}`)
	h.submit("openai_text", `{"prompt":"down too"}`)
	h.waitFor("the breaker to open", func() bool {
		tr, _ := h.m.Store().Snapshot().Throttle("openai")
		return tr.Breaker == "open"
	})
	if m := get(t, "http://"+h.m.HTTPAddr()+"/metrics"); !strings.Contains(m, `machine_connector_breaker_open{connector="openai"} 1`) {
		t.Errorf("the breaker metric:\n%s", grep(m, "machine_connector_breaker_open"))
	}
	if body := get(t, "http://"+h.m.HTTPAddr()+"/status"); !strings.Contains(body, `"breaker":"open"`) || !strings.Contains(body, `"why":"breaker open"`) {
		t.Errorf("/status does not show the open breaker:\n%s", grep(body, "breaker"))
	}
	opened := logs.records("connector circuit breaker open; its jobs are left to other machines for a while")
	if len(opened) != 1 || opened[0]["connector"] != "openai" || !strings.Contains(fmt.Sprint(opened[0]["last_error"]), "500") {
		t.Errorf("the breaker's log lines: %v", opened)
	}
}
