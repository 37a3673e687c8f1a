package comfyui_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/emp-job-queue/machine/installers"
	"github.com/emp-job-queue/machine/installers/comfyui"
)

// secrets are what the machine's own environment holds and no installer child may see.
var secrets = map[string]string{
	"OPENAI_API_KEY":      "sk-openai-secret-value",
	"MACHINE_API_TOKEN":   "machine-token-secret-value",
	"HUB_REDIS_URL":       "redis://:redis-password-secret@redis.internal:6379/0",
	"REPLICATE_API_TOKEN": "r8-replicate-secret-value",
}

// spy puts programs on PATH (and a venv-creating python) that write their arguments and
// environment to files in dir, then do the real work: what an installer's git, pip and python
// children really receive.
func spy(t *testing.T, dir string) (python string) {
	t.Helper()
	realGit, err := exec.LookPath("git")
	if err != nil {
		t.Fatal("git is required for the installer tests")
	}
	realPython, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is required for the installer tests")
	}
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) string {
		path := filepath.Join(bin, name)
		if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}
	write("git", fmt.Sprintf("echo \"$*\" >> %[1]s/git.args\nenv >> %[1]s/git.env\nexec %[2]s \"$@\"\n", dir, realGit))
	pip := write("pip", fmt.Sprintf("env > %s/pip.env\n", dir))
	// python -m venv <dir>: a venv whose python is the real one and whose pip is the spy.
	python = write("python", fmt.Sprintf("env > %[1]s/python.env\nmkdir -p \"$3/bin\" && ln -s %[2]s \"$3/bin/python\" && cp %[3]s \"$3/bin/pip\"\n",
		dir, realPython, pip))
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	return python
}

// git, pip, the venv's python and a manifest's custom script run code from the network: they
// get the environment supervised services get, never the machine's secrets.
func TestInstallerChildrenGetNoSecrets(t *testing.T) {
	comfy := gitRepo(t, map[string]string{"main.py": "print('comfy')\n", "requirements.txt": "torch\n"})
	node := gitRepo(t, map[string]string{"__init__.py": "", "requirements.txt": "numpy\n"})
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	work := t.TempDir()
	python := spy(t, work)
	in := comfyui.Install{
		Dir: filepath.Join(work, "ComfyUI"), RepoURL: comfy, Branch: "main", Python: python,
		Download: &installers.Downloader{Cache: filepath.Join(work, "cache")},
		Manifest: comfyui.Manifest{CustomNodes: []comfyui.Node{{Name: "node", URL: node, Requirements: true,
			CustomScript: "env > " + filepath.Join(work, "script.env")}}},
	}
	runner := &installers.Runner{MarkerDir: filepath.Join(work, "markers")}
	if err := runner.Run(context.Background(), in.Stages()...); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"git.env", "python.env", "pip.env", "script.env"} {
		env, err := os.ReadFile(filepath.Join(work, f))
		if err != nil || !strings.Contains(string(env), "PATH=") {
			t.Errorf("%s: the child did not run or got no PATH (%v)", f, err)
			continue
		}
		for k, v := range secrets {
			if strings.Contains(string(env), v) || strings.Contains(string(env), k+"=") {
				t.Errorf("%s: the child sees %s", f, k)
			}
		}
	}
	args, _ := os.ReadFile(filepath.Join(work, "git.args"))
	if !strings.Contains(string(args), "-- "+comfy+" ") || !strings.Contains(string(args), "-- "+node+" ") {
		t.Errorf("git clone was not given -- before its URL:\n%s", args)
	}
}

// syncLog collects what the installer logs.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Credentials in manifest URLs (a private repository's user:password, a gated model's token)
// appear in no error and no log line; a URL git would take for an option never reaches git.
func TestInstallerErrorsAndLogsHideCredentialsAndOptions(t *testing.T) {
	comfy := gitRepo(t, map[string]string{"main.py": "", "requirements.txt": ""})
	work := t.TempDir()
	python := spy(t, work)
	in := comfyui.Install{
		Dir: filepath.Join(work, "ComfyUI"), RepoURL: comfy, Python: python,
		Download: &installers.Downloader{Cache: filepath.Join(work, "cache")},
		Manifest: comfyui.Manifest{
			CustomNodes: []comfyui.Node{
				{Name: "private", URL: "https://deploy:gitpass-secret@127.0.0.1:1/org/private.git"},
				{Name: "option", URL: "--upload-pack=touch " + filepath.Join(work, "pwned")},
			},
			Models: []comfyui.Model{{URL: "http://127.0.0.1:1/m.safetensors?token=hf-token-secret&download=true",
				Dest: "models/m.safetensors", SHA256: strings.Repeat("ab", 32)}},
		},
	}
	log := &syncLog{}
	runner := &installers.Runner{MarkerDir: filepath.Join(work, "markers"), Log: slog.New(slog.NewTextHandler(log, nil))}
	err := runner.Run(context.Background(), in.Stages()...)
	var failed *installers.StepError
	if !errors.As(err, &failed) || len(failed.Failures) != 3 {
		t.Fatalf("install = %v; want the two nodes and the model to fail", err)
	}
	seen := err.Error() + "\n" + log.b.String()
	for _, secret := range []string{"gitpass-secret", "hf-token-secret"} {
		if strings.Contains(seen, secret) {
			t.Errorf("%s shows in the errors or logs:\n%s", secret, seen)
		}
	}
	if !strings.Contains(failed.Failures["custom node option"].Error(), "starts with '-'") {
		t.Errorf("option-like URL: %v", failed.Failures["custom node option"])
	}
	if args, _ := os.ReadFile(filepath.Join(work, "git.args")); strings.Contains(string(args), "--upload-pack") {
		t.Errorf("git was given the URL as an option:\n%s", args)
	}
	for _, marker := range mustGlob(t, filepath.Join(work, "markers", "*")) {
		if b, _ := os.ReadFile(marker); strings.Contains(string(b), "secret") {
			t.Errorf("install marker %s keeps a credential: %s", marker, b)
		}
	}
}

func mustGlob(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestManifestRefusesOptionLikeGitArguments(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.json")
	_ = os.WriteFile(path, []byte(`{"custom_nodes":[{"name":"a","url":"--upload-pack=touch /tmp/x"},{"name":"b","url":"https://x/y.git","branch":"-b"}]}`), 0o600)
	_, err := comfyui.LoadManifest(path)
	if err == nil || strings.Count(err.Error(), "starts with '-'") != 2 {
		t.Fatalf("err = %v; want both option-like arguments refused", err)
	}
}
