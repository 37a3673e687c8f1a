package machine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/internal/fakegemini"
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
	port := testutil.Port(t)
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

// a1111Repo makes a local A1111 "repository" whose webui.py runs the fake A1111, and returns
// its URL and commit.
func a1111Repo(t *testing.T, fake string) (string, string) {
	t.Helper()
	repo := filepath.Join(t.TempDir(), "a1111-repo")
	_ = os.MkdirAll(repo, 0o755)
	_ = os.WriteFile(filepath.Join(repo, "webui.py"), []byte(fmt.Sprintf("import os, sys\nos.execv(%q, [%q] + sys.argv[1:])\n", fake, fake)), 0o644)
	_ = os.WriteFile(filepath.Join(repo, "launch.py"), []byte("print('prepared')\n"), 0o644)
	var commit string
	for _, args := range [][]string{{"init", "-q", "-b", "master"}, {"add", "."}, {"commit", "-q", "-m", "a1111"}, {"rev-parse", "HEAD"}} {
		c := exec.Command("git", append([]string{"-C", repo, "-c", "user.email=t@e", "-c", "user.name=t"}, args...)...)
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v %s", args, err, out)
		}
		commit = strings.TrimSpace(string(out))
	}
	return "file://" + repo, commit
}

// The old runtime's other worker types on one machine, WORKERS=ollama:1,a1111:auto,gemini:1
// with two simulated GPUs: the plan has one A1111 per GPU on 7860+i and one Ollama daemon; the
// machine installs A1111 from a repository at its pinned commit and Ollama's models, supervises
// them, and completes a job of each kind against the fakes.
func TestOldWorkerTypesOnOneMachine(t *testing.T) {
	dir := t.TempDir()
	ollamaBin := fakeBinary(t, "../../internal/fakeollama/cmd", dir, "ollama")
	a1111Bin := fakeBinary(t, "../../internal/fakea1111/server", dir, "fakea1111")
	repo, commit := a1111Repo(t, a1111Bin)
	gem := fakegemini.New("gemini-test-key-123456")
	api := httptest.NewServer(gem.Handler())
	defer api.Close()
	ollamaPort, a1111Port := testutil.Port(t), testutil.Port(t)
	for a1111Port+1 == ollamaPort {
		a1111Port = testutil.Port(t)
	}
	assetsDir := t.TempDir()
	h := start(t, map[string]string{"WORKERS": "ollama:1,a1111:auto,gemini:1", "GPU_MODE": "mock", "MACHINE_GPU_COUNT": "2",
		"OLLAMA_BIN": ollamaBin, "OLLAMA_BASE_PORT": fmt.Sprint(ollamaPort), "OLLAMA_DEFAULT_MODELS": "llama3.2",
		"OLLAMA_MODELS":  filepath.Join(dir, "models"),
		"A1111_REPO_URL": repo, "A1111_COMMIT_HASH": commit, "A1111_DIR": filepath.Join(dir, "a1111"), "A1111_BASE_PORT": fmt.Sprint(a1111Port),
		"GEMINI_API_KEY": "gemini-test-key-123456", "GEMINI_NANO_BANANA_URL": api.URL + "/v1beta/models/gemini-2.5-flash-image-preview:generateContent",
		"MACHINE_ASSET_DIR": assetsDir})

	var services []string
	for _, s := range h.m.Plan().Services {
		services = append(services, fmt.Sprintf("%s:%d", s.Name, s.Port))
	}
	want := []string{"ollama:" + fmt.Sprint(ollamaPort), fmt.Sprintf("a1111-gpu0:%d", a1111Port), fmt.Sprintf("a1111-gpu1:%d", a1111Port+1)}
	if !slices.Equal(services, want) || len(h.m.Plan().Slots) != 4 {
		t.Fatalf("plan services %v (want %v), slots %+v", services, want, h.m.Plan().Slots)
	}
	for _, name := range []string{"ollama", "a1111-gpu0", "a1111-gpu1"} {
		h.waitFor(name+" to be ready", func() bool {
			st, ok := h.m.Store().Snapshot().Service(name)
			return ok && st.State == "ready"
		})
	}
	text := h.submit("text_generation", `{"prompt":"good morning"}`)
	imgs := []string{h.submit("a1111", `{"prompt":"a fox","steps":3}`), h.submit("a1111", `{"prompt":"a cat","steps":3}`)}
	banana := h.submit("gem-nano-banana", `{"prompt":"a banana"}`)
	for _, id := range append([]string{text, banana}, imgs...) {
		h.waitFor("job "+id, func() bool { return h.status(id) == "completed" })
	}
	if got := h.completedData(text)["text"]; got != "echo: good morning" {
		t.Errorf("ollama text = %v", got)
	}
	for _, id := range append(imgs, banana) {
		if _, err := os.Stat(filepath.Join(assetsDir, id+".png")); err != nil {
			t.Errorf("job %s saved no image: %v", id, err)
		}
	}
	res := h.m.Control().Do(context.Background(), control.Command{Op: control.Logs, Service: "a1111-gpu1", Lines: 10})
	if want := fmt.Sprintf("--port %d --api --nowebui --xformers", a1111Port+1); !strings.Contains(strings.Join(res.Lines, "\n"), want) ||
		!strings.Contains(strings.Join(res.Lines, "\n"), "CUDA_VISIBLE_DEVICES=1") {
		t.Errorf("a1111-gpu1's command line: %v, want %s on GPU 1", res.Lines, want)
	}
}
