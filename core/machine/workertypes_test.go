package machine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/internal/testutil"
)

// fakeBinary builds one of the in-repo fakes into dir under name.
func fakeBinary(t *testing.T, pkg, dir, name string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	if err := testutil.Build(pkg, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// completedData returns the data of a completed job's result.
func (h *harness) completedData(id string) map[string]any {
	var stored struct {
		Data struct {
			Data map[string]any `json:"data"`
		} `json:"data"`
	}
	_ = json.Unmarshal([]byte(h.rdb.HGet(context.Background(), "jobs:completed", id).Val()), &stored)
	return stored.Data.Data
}

// The ollama connector end to end: the machine finds the (fake) ollama binary, pulls the
// configured model through a daemon it starts for the install, supervises `ollama serve` on
// OLLAMA_BASE_PORT with OLLAMA_HOST, and runs the four job services through it.
func TestOllamaThroughTheMachine(t *testing.T) {
	dir := t.TempDir()
	bin := fakeBinary(t, "../../internal/fakeollama/cmd", dir, "ollama")
	port := freePort(t)
	h := start(t, map[string]string{"WORKER_CONNECTORS": "ollama:2", "OLLAMA_BIN": bin, "OLLAMA_BASE_PORT": fmt.Sprint(port),
		"OLLAMA_DEFAULT_MODELS": "llama3.2,nomic-embed-text", "OLLAMA_MODELS": filepath.Join(dir, "models")})
	h.waitFor("ollama to be ready", func() bool {
		st, ok := h.m.Store().Snapshot().Service("ollama")
		return ok && st.State == "ready"
	})
	jobs := map[string]string{
		h.submit("text_generation", `{"prompt":"hello world","max_tokens":3}`):             "echo: hello world",
		h.submit("chat_completion", `{"messages":[{"role":"user","content":"hi there"}]}`): "echo: hi there",
		h.submit("ollama", `{"prompt":"plain"}`):                                           "echo: plain",
	}
	emb := h.submit("embeddings", `{"model":"nomic-embed-text","input":"vectors"}`)
	for id, want := range jobs {
		h.waitFor("job "+id, func() bool { return h.status(id) == "completed" })
		if got := h.completedData(id)["text"]; got != want {
			t.Errorf("job %s text = %v, want %q", id, got, want)
		}
	}
	h.waitFor("the embedding", func() bool { return h.status(emb) == "completed" })
	if d := h.completedData(emb); d["dimensions"] != float64(8) {
		t.Errorf("embedding = %v", d)
	}
	res := h.m.Control().Do(context.Background(), control.Command{Op: control.Logs, Service: "ollama", Lines: 10})
	if want := fmt.Sprintf("Listening on 127.0.0.1:%d", port); !res.OK || !strings.Contains(strings.Join(res.Lines, "\n"), want) {
		t.Errorf("daemon log %v lacks %q", res.Lines, want)
	}
}
