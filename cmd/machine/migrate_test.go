package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `machine migrate` on the old generator's files: it prints the new configuration without
// secrets, writes them only to --out (0600), and exits 1 while something must change.
func TestMigrateCommand(t *testing.T) {
	out := filepath.Join(t.TempDir(), "new.env")
	stdout, err := command(nil, "migrate", "--from-ecosystem", "../../core/migrate/testdata/ollama-box/pm2-ecosystem.config.cjs", "--out", out).Output()
	if err == nil {
		t.Error("migrate exited 0 though S3_SECRET_ACCESS_KEY is missing")
	}
	for _, want := range []string{"WORKERS='ollama:1,a1111:auto,gemini:1'", "MACHINE_ID=gpu-box-17", "# GEMINI_API_KEY=(secret, not shown", "What changes in behaviour"} {
		if !strings.Contains(string(stdout), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(string(stdout), "AIzaSyExampleGeminiKey") {
		t.Error("the printed configuration shows the Gemini key")
	}
	st, err := os.Stat(out)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("--out file: %v %v", st, err)
	}
	if b, _ := os.ReadFile(out); !strings.Contains(string(b), "GEMINI_API_KEY=AIzaSyExampleGeminiKey0123456789") {
		t.Errorf("--out file lacks the key:\n%s", b)
	}
	if msg, err := command(nil, "migrate").CombinedOutput(); err == nil || !strings.Contains(string(msg), "--from-env FILE") {
		t.Errorf("migrate without input: %v %s", err, msg)
	}
}

// `machine config validate` lists the old variables it found and what became of them.
func TestConfigValidateListsOldVariables(t *testing.T) {
	out, err := command(map[string]string{"WORKERS": "mock:1", "POLL_INTERVAL_MS": "1000", "PM2_HOME": "/workspace/.pm2"}, "config", "validate").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"old variables of the emp machine (2)", "renamed  POLL_INTERVAL_MS is the old name of WORKER_POLL_INTERVAL_MS", "ignored  PM2_HOME is ignored"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, err = command(map[string]string{"WORKERS": "mock:1", "COMFYUI_PORT_INCREMENT": "2"}, "config", "validate").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "COMFYUI_PORT_INCREMENT=2 cannot be honoured") {
		t.Errorf("a refused value passed validation: %v\n%s", err, out)
	}
}
