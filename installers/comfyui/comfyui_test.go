package comfyui_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/emp-job-queue/machine/installers"
	"github.com/emp-job-queue/machine/installers/comfyui"
)

// gitRepo makes a local repository with the given files and returns its file:// URL.
func gitRepo(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "."},
		{"-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-m", "init"}} {
		if out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return "file://" + dir
}

func TestInstallWithABrokenNodeAndModel(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git is required for the installer tests")
	}
	comfy := gitRepo(t, map[string]string{"main.py": "print('comfy')\n", "requirements.txt": ""})
	goodNode := gitRepo(t, map[string]string{"__init__.py": "", "requirements.txt": ""})
	weights := bytes.Repeat([]byte{7}, 4096)
	sum := sha256.Sum256(weights)
	models := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/sdxl.safetensors" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(weights)
	}))
	defer models.Close()

	work := t.TempDir()
	in := comfyui.Install{
		Dir: filepath.Join(work, "ComfyUI"), RepoURL: comfy, Branch: "main",
		Getenv:   func(k string) string { return map[string]string{"HF_TOKEN": "hf_secret"}[k] },
		Download: &installers.Downloader{Cache: filepath.Join(work, "cache")},
		Manifest: comfyui.Manifest{
			CustomNodes: []comfyui.Node{
				{Name: "good-node", URL: "git clone " + goodNode, Requirements: true,
					CustomScript: "echo installed > marker.txt", Env: map[string]string{"TOKEN": "${HF_TOKEN}"}},
				{Name: "broken-node", URL: "file:///nonexistent/repo"},
			},
			Models: []comfyui.Model{
				{URL: models.URL + "/sdxl.safetensors", Dest: "models/checkpoints/sdxl.safetensors", SHA256: hex.EncodeToString(sum[:])},
				{URL: models.URL + "/gone.safetensors", Dest: "models/checkpoints/gone.safetensors", SHA256: strings.Repeat("ab", 32)},
			},
		},
	}
	var mu sync.Mutex
	var events []installers.Event
	runner := &installers.Runner{MarkerDir: filepath.Join(work, "markers"), Parallel: 2,
		OnEvent: func(ev installers.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() }}
	err := runner.Run(context.Background(), in.Stages()...)
	var stepErr *installers.StepError
	if !errors.As(err, &stepErr) || len(stepErr.Failures) != 2 {
		t.Fatalf("install = %v; want exactly the broken node and the missing model to fail", err)
	}
	for _, name := range []string{"custom node broken-node", "model models/checkpoints/gone.safetensors"} {
		if stepErr.Failures[name] == nil {
			t.Errorf("%s did not fail: %v", name, err)
		}
	}
	if !strings.Contains(stepErr.Failures["model models/checkpoints/gone.safetensors"].Error(), "404") {
		t.Errorf("missing model error = %v", stepErr.Failures["model models/checkpoints/gone.safetensors"])
	}
	for _, f := range []string{"main.py", ".venv/bin/python", "custom_nodes/good-node/marker.txt", "models/checkpoints/sdxl.safetensors"} {
		if _, err := os.Stat(filepath.Join(in.Dir, f)); err != nil {
			t.Errorf("%s missing after install: %v", f, err)
		}
	}
	env, _ := os.ReadFile(filepath.Join(in.Dir, "custom_nodes/good-node/.env"))
	if !strings.Contains(string(env), `TOKEN="hf_secret"`) {
		t.Errorf("node .env = %q", env)
	}
	if _, err := os.Stat(filepath.Join(in.Dir, "custom_nodes/broken-node")); !os.IsNotExist(err) {
		t.Error("a failed clone left a directory behind")
	}

	// A second boot skips everything that was installed and retries only what failed.
	events = nil
	_ = runner.Run(context.Background(), in.Stages()...)
	var ran []string
	for _, ev := range events {
		if ev.Phase == installers.Started {
			ran = append(ran, ev.Step)
		}
	}
	slices.Sort(ran)
	if want := []string{"custom node broken-node", "model models/checkpoints/gone.safetensors"}; !slices.Equal(ran, want) {
		t.Errorf("second boot ran %v, want only the failed steps %v", ran, want)
	}

	// Strict mode: a broken item fails the install.
	strict := &installers.Runner{MarkerDir: filepath.Join(work, "markers"), Strict: true}
	if err := strict.Run(context.Background(), in.Stages()...); err == nil {
		t.Error("strict install passed with a broken node")
	}
}

func TestServiceSpec(t *testing.T) {
	in := comfyui.Install{Dir: "/workspace/ComfyUI"}
	gpu := comfyui.ServiceSpec(in, "comfyui-gpu1", 8189, 1, "--highvram --preview-method auto")
	want := "/workspace/ComfyUI/.venv/bin/python main.py --listen 127.0.0.1 --port 8189 --cuda-device 1 --highvram --preview-method auto"
	if got := strings.Join(gpu.Command, " "); got != want {
		t.Errorf("GPU command = %s\nwant %s", got, want)
	}
	if !slices.Contains(gpu.Env, "CUDA_VISIBLE_DEVICES=1") || gpu.Probe.Target != "http://127.0.0.1:8189/system_stats" {
		t.Errorf("GPU spec = %+v", gpu)
	}
	cpu := comfyui.ServiceSpec(in, "comfyui-cpu0", 8188, -1, "")
	if !slices.Contains(cpu.Command, "--cpu") || slices.Contains(cpu.Command, "--cuda-device") {
		t.Errorf("CPU command = %v", cpu.Command)
	}
}

func TestManifestProblemsAllAtOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.json")
	_ = os.WriteFile(path, []byte(`{"custom_nodes":[{"name":"../evil","url":"x"}],"models":[{"url":"u","destination":"/etc/passwd"},{"url":"u","destination":"m","sha256":"xyz"}]}`), 0o600)
	_, err := comfyui.LoadManifest(path)
	if err == nil || strings.Count(err.Error(), ";") != 2 {
		t.Fatalf("err = %v; want three problems", err)
	}
}

// An image bakes ComfyUI at a pinned commit; at boot the marker directory may be a fresh
// volume and the network closed. A checkout already at its commit is not fetched again.
func TestCheckoutAtItsCommitNeedsNoOrigin(t *testing.T) {
	repo := gitRepo(t, map[string]string{"main.py": "print('comfy')\n", "requirements.txt": ""})
	head, err := exec.Command("git", "-C", strings.TrimPrefix(repo, "file://"), "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	in := comfyui.Install{Dir: filepath.Join(work, "ComfyUI"), RepoURL: repo, Branch: "main", Commit: strings.TrimSpace(string(head))[:12]}
	clone := in.Stages()[0]
	if err := (&installers.Runner{MarkerDir: filepath.Join(work, "m1")}).Run(context.Background(), clone); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(strings.TrimPrefix(repo, "file://")); err != nil {
		t.Fatal(err)
	}
	if err := (&installers.Runner{MarkerDir: filepath.Join(work, "m2")}).Run(context.Background(), clone); err != nil {
		t.Fatalf("checkout at its commit, without markers or origin: %v", err)
	}
	// Without a pinned commit the installer must ask the origin, which is gone.
	in.Commit = ""
	if err := (&installers.Runner{MarkerDir: filepath.Join(work, "m3")}).Run(context.Background(), in.Stages()[0]); err == nil {
		t.Fatal("an unpinned checkout did not fetch its (missing) origin")
	}
}
