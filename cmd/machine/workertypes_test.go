package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/internal/testutil"
)

// `machine install` installs Ollama's models ahead of the first start: the pulls go through a
// daemon it starts and stops, and a second run skips them.
func TestInstallPullsOllamaModels(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "ollama")
	if err := testutil.Build("../../internal/fakeollama/cmd", bin); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"WORKER_CONNECTORS": "ollama", "OLLAMA_BIN": bin, "OLLAMA_BASE_PORT": fmt.Sprint(testutil.Port(t)),
		"OLLAMA_DEFAULT_MODELS": "qwen3:0.6b", "OLLAMA_MODELS": filepath.Join(dir, "models"), "MACHINE_CACHE_DIR": filepath.Join(dir, "cache"),
		"GPU_MODE": "mock"}
	out, err := command(env, "install").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ollama installed") {
		t.Fatalf("install: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "models", "fake-manifests", "qwen3@0.6b")); err != nil {
		t.Errorf("the model was not pulled into OLLAMA_MODELS: %v\n%s", err, out)
	}
	out, err = command(env, "install").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"install step skipped","step":"ollama model qwen3:0.6b"`) {
		t.Errorf("second install did not skip the pulled model: %v\n%s", err, out)
	}
}
