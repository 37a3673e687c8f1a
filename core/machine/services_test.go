package machine_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/internal/fakeopenai"
	"github.com/emp-job-queue/machine/internal/testutil"
)

func TestComfyUIEndToEnd(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "fakecomfy")
	if err := testutil.Build("../../internal/fakecomfy/server", fake); err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(dir, "repo")
	_ = os.MkdirAll(repo, 0o755)
	mainPy := fmt.Sprintf("import os, sys\nos.execv(%q, [%q] + sys.argv[1:])\n", fake, fake)
	_ = os.WriteFile(filepath.Join(repo, "main.py"), []byte(mainPy), 0o644)
	_ = os.WriteFile(filepath.Join(repo, "requirements.txt"), nil, 0o644)
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "."}, {"commit", "-q", "-m", "comfy"}} {
		c := exec.Command("git", append([]string{"-C", repo, "-c", "user.email=t@e", "-c", "user.name=t"}, args...)...)
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v %s", args, err, out)
		}
	}
	port := testutil.Port(t)
	h := start(t, map[string]string{"WORKER_CONNECTORS": "comfyui", "MACHINE_GPU_COUNT": "1",
		"COMFYUI_REPO_URL": "file://" + repo, "COMFYUI_BRANCH": "main", "COMFYUI_DIR": filepath.Join(dir, "ComfyUI"),
		"MACHINE_CACHE_DIR": filepath.Join(dir, "cache"), "COMFYUI_BASE_PORT": fmt.Sprint(port), "COMFY_ARGS": "--highvram"})
	h.waitFor("ComfyUI to be ready", func() bool {
		st, ok := h.m.Store().Snapshot().Service("comfyui-gpu0")
		return ok && st.State == "ready"
	})
	id := h.submit("comfyui", `{"workflow":{"3":{"class_type":"KSampler","inputs":{}}}}`)
	h.waitFor("the workflow to complete", func() bool { return h.status(id) == "completed" })
	var stored struct {
		Data struct {
			Data map[string]any `json:"data"`
		} `json:"data"`
	}
	_ = json.Unmarshal([]byte(h.rdb.HGet(context.Background(), "jobs:completed", id).Val()), &stored)
	if u, _ := stored.Data.Data["image_url"].(string); !strings.HasSuffix(u, id+".png") {
		t.Errorf("result = %v", stored.Data.Data)
	}
	res := h.m.Control().Do(context.Background(), control.Command{Op: control.Logs, Service: "comfyui-gpu0", Lines: 10})
	want := fmt.Sprintf("args [--listen 127.0.0.1 --port %d --cuda-device 0 --highvram]", port)
	if !res.OK || !strings.Contains(strings.Join(res.Lines, "\n"), want) {
		t.Errorf("ComfyUI's command line: %v, want %s", res.Lines, want)
	}
}

func TestOpenAIThroughTheMachine(t *testing.T) {
	const key = "sk-machine-test-key-123456"
	fake := fakeopenai.New(key)
	api := httptest.NewServer(fake.Handler())
	defer api.Close()
	assetsDir := t.TempDir()
	h := start(t, map[string]string{"WORKER_CONNECTORS": "openai:2", "OPENAI_API_KEY": key, "OPENAI_BASE_URL": api.URL + "/v1",
		"MACHINE_ASSET_DIR": assetsDir, "MACHINE_ASSET_BASE_URL": "https://cdn.example.com"})
	text := h.submit("openai_text", `{"prompt":"hi"}`)
	img := h.submit("openai_image", `{"prompt":"a cat"}`)
	edit := h.submit("openai_img2img", `{"prompt":"make it blue","images":["data:image/png;base64,`+
		base64.StdEncoding.EncodeToString(fakeopenai.PNG)+`"]}`)
	for _, id := range []string{text, img, edit} {
		h.waitFor("job "+id, func() bool { return h.status(id) == "completed" })
	}
	stored := h.rdb.HGet(context.Background(), "jobs:completed", img).Val()
	if !strings.Contains(stored, "https://cdn.example.com/"+img+".png") || !strings.Contains(stored, `"mime_type":"image/png"`) {
		t.Errorf("image result = %s", stored)
	}
	if edited := h.rdb.HGet(context.Background(), "jobs:completed", edit).Val(); !strings.Contains(edited, "https://cdn.example.com/"+edit+".png") {
		t.Errorf("img2img result = %s", edited)
	}
	if len(fake.Edits) != 1 || fake.Edits[0].Prompt != "make it blue" || len(fake.Edits[0].Images) != 1 || fake.Edits[0].Images[0] != "image/png" {
		t.Errorf("edits the fake received: %+v", fake.Edits)
	}
	resp, err := http.Get("http://" + h.m.HTTPAddr() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), key) {
		t.Error("/status shows the OpenAI key")
	}
}

func TestPlaywrightThroughTheMachine(t *testing.T) {
	assetsDir := t.TempDir()
	// A fallback poll, so a retried attempt (after its backoff) is picked up in the test's time.
	h := start(t, map[string]string{"WORKER_CONNECTORS": "playwright:2", "MACHINE_ASSET_DIR": assetsDir, "WORKER_POLL_INTERVAL_MS": "500"})
	h.waitFor("the browser to be ready", func() bool {
		st, ok := h.m.Store().Snapshot().Service("browser")
		return ok && st.State == "ready"
	})
	id := h.submit("playwright", `{"type":"html","html":"<h1>hi</h1>","width":200,"height":100}`)
	defer func() {
		if t.Failed() {
			t.Logf("job: %v", h.rdb.HGetAll(context.Background(), "job:"+id).Val())
		}
	}()
	h.waitFor("the render", func() bool { return h.status(id) == "completed" })
	if _, err := os.Stat(filepath.Join(assetsDir, id+".png")); err != nil {
		t.Errorf("no PNG: %v", err)
	}

	// A page on this machine (here: its own HTTP port) is closed to jobs without an
	// allow-list: the job fails at once, for good, saying why.
	ssrf := h.submit("playwright", fmt.Sprintf(`{"type":"screenshot","url":"http://localhost:%s/status"}`, h.m.HTTPAddr()[strings.LastIndexByte(h.m.HTTPAddr(), ':')+1:]))
	msg, retries := h.failed(ssrf)
	if !strings.Contains(msg, "is closed to jobs") || !strings.Contains(msg, "MACHINE_ALLOW_PRIVATE_NETWORKS") {
		t.Errorf("the failure does not say why: %q", msg)
	}
	if retries != 1 {
		t.Errorf("a refused request was retried: retry_count %v", retries)
	}
	// Chromium has no sandbox for root: a root machine runs the browser as BROWSER_USER (nobody).
	if st, _ := h.m.Store().Snapshot().Service("browser"); os.Geteuid() == 0 {
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.PID))
		if !strings.Contains(string(status), "Uid:\t65534\t") {
			t.Errorf("the browser (pid %d) does not run as nobody:\n%s", st.PID, status)
		}
	}
}
