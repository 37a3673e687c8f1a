package migrate_test

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/migrate"
	"github.com/emp-job-queue/machine/core/plan"
)

func readEnv(t *testing.T, files ...string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, name := range files {
		f, err := os.Open(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		part, err := migrate.ParseEnv(f, name)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range part {
			env[k] = v
		}
	}
	return env
}

func readEcosystem(t *testing.T, name string) *migrate.Ecosystem {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	eco, err := migrate.ParseEcosystem(f, name)
	if err != nil {
		t.Fatal(err)
	}
	return eco
}

func load(t *testing.T, env map[string]string, extra map[string]string) *config.Config {
	t.Helper()
	cfg, err := config.Load(func(k string) (string, bool) {
		if v, ok := extra[k]; ok {
			return v, true
		}
		v, ok := env[k]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The ecosystem file the old generator wrote for WORKERS=ollama:1,a1111:auto,gemini:1 on two
// GPUs becomes a configuration that plans the same slots with the same ids, less the random
// suffix; every variable in it is classified; the missing S3 secret is called out.
func TestEcosystemOfTheOllamaBox(t *testing.T) {
	rep := migrate.FromEcosystem(readEcosystem(t, "ollama-box/pm2-ecosystem.config.cjs"))
	if len(rep.Kept) != 0 {
		t.Errorf("variables of the generated file left unclassified: %v", rep.Kept)
	}
	for k, want := range map[string]string{"WORKERS": "ollama:1,a1111:auto,gemini:1", "MACHINE_ID": "gpu-box-17", "OLLAMA_BASE_PORT": "11434",
		"OLLAMA_TIMEOUT_SECONDS": "300", "S3_ENDPOINT": "s3.amazonaws.com", "S3_ACCESS_KEY_ID": "AKIAEXAMPLEKEY123456", "MACHINE_WORKSPACE": "/workspace",
		"OLLAMA_DEFAULT_MODELS": "qwen3:8b,gemma3:4b,llama3.1:8b", "GEMINI_API_KEY": "AIzaSyExampleGeminiKey0123456789"} {
		if rep.Env[k] != want {
			t.Errorf("%s = %q, want %q", k, rep.Env[k], want)
		}
	}
	for _, gone := range []string{"PATH", "HOME", "NODE_ENV", "WORKER_ID", "CONNECTORS", "POLL_INTERVAL_MS", "OLLAMA_HOST", "PM2_HOME", "AWS_ACCESS_KEY_ID"} {
		if _, ok := rep.Env[gone]; ok {
			t.Errorf("%s is in the new configuration", gone)
		}
	}
	if len(rep.Refused) != 1 || !strings.Contains(rep.Refused[0], "S3_SECRET_ACCESS_KEY is not set") {
		t.Errorf("refused = %v", rep.Refused)
	}
	pm2 := strings.Join(rep.PM2, "\n")
	for _, want := range []string{"slot gpu-box-17-worker-a1111-1", "ollama:1,a1111:2,gemini:1", "carries the random suffix", "PM2 app health-server → gone"} {
		if !strings.Contains(pm2, want) {
			t.Errorf("PM2 mapping lacks %q:\n%s", want, pm2)
		}
	}
	// With the secret given and the GPUs the box had, it plans what the old generator ran.
	cfg := load(t, rep.Env, map[string]string{"S3_SECRET_ACCESS_KEY": "s", "MACHINE_GPU_COUNT": "2", "GPU_MODE": "mock"})
	p, err := plan.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range p.Slots {
		ids = append(ids, s.ID)
	}
	want := []string{"gpu-box-17-worker-ollama-0", "gpu-box-17-worker-a1111-0", "gpu-box-17-worker-a1111-1", "gpu-box-17-worker-gemini-0"}
	if !slices.Equal(ids, want) {
		t.Errorf("slots = %v, want %v", ids, want)
	}
}

// The migrated configuration means what the old one means when the machine reads the old one
// directly (old names are honoured): migrating changes names, not behaviour.
func TestMigratedConfigurationMeansTheSame(t *testing.T) {
	old := readEnv(t, "ollama-box/machine.env", "ollama-box/machine.env.secret", "ollama-box/deploy.env")
	rep := migrate.FromEnv(old)
	extra := map[string]string{"S3_SECRET_ACCESS_KEY": "s"}
	a, b := load(t, old, extra), load(t, rep.Env, extra)
	type view struct {
		ID, Workspace, Bucket, Region, LogLevel, GPUMode string
		Ollama                                           config.Ollama
		Gemini                                           config.Gemini
		Connectors                                       []config.Connector
		Poll, JobTimeout                                 time.Duration
		HealthPort                                       int
	}
	v := func(c *config.Config) view {
		return view{c.MachineID, c.Workspace, c.Assets.S3Bucket, c.Assets.S3Region, c.LogLevel, c.GPUMode, c.Ollama, c.Gemini, c.Connectors,
			c.PollInterval, c.JobTimeout, c.HealthPort}
	}
	va, vb := v(a), v(b)
	va.Ollama.Install = vb.Ollama.Install // written out on purpose: the old entrypoint installed Ollama
	if !reflect.DeepEqual(va, vb) {
		t.Errorf("old read directly: %+v\nmigrated:          %+v", va, vb)
	}
	if len(b.Legacy) != 0 {
		t.Errorf("the migrated configuration still has old variables: %+v", b.Legacy)
	}
}

// The comfy box's env files: Azure storage and EmProps components cannot be honoured and are
// called out; secrets are shown only with --out; the old capability variables stay.
func TestEnvFilesOfTheComfyBox(t *testing.T) {
	rep := migrate.FromEnv(readEnv(t, "comfy-box/machine.env", "comfy-box/machine.env.secret", "comfy-box/deploy.env"))
	refused := strings.Join(rep.Refused, "\n")
	for _, v := range []string{"AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY", "CLOUD_STORAGE_PROVIDER=azure", "CLOUD_PROVIDER=azure", "COMPONENTS"} {
		if !strings.Contains(refused, v) {
			t.Errorf("refused lacks %s:\n%s", v, refused)
		}
	}
	if strings.Contains(refused, "azure-example-key") {
		t.Error("a refusal shows the Azure key")
	}
	if rep.Env["WORKER_POLL_INTERVAL_MS"] != "1000" || rep.Env["WORKER_FEATURES"] != `["upscale","inpaint"]` || rep.Env["COMFY_ARGS"] != "--preview-method auto --highvram" {
		t.Errorf("env = %v", rep.Env)
	}
	var shown, full bytes.Buffer
	rep.Write(&shown, "comfy-box", false)
	rep.Write(&full, "comfy-box", true)
	for _, secret := range []string{"sk-proj-example-openai-key-0123", "redis-pass-7f3a", "hf_exampletoken0123456789"} {
		if strings.Contains(shown.String(), secret) {
			t.Errorf("the printed report shows a secret (%s)", secret)
		}
		if !strings.Contains(full.String(), secret) {
			t.Errorf("the written file lacks a secret (%s)", secret)
		}
	}
	// What --out writes is an env file the machine can read back.
	back, err := migrate.ParseEnv(&full, "out")
	if err != nil {
		t.Fatal(err)
	}
	if back["COMFY_ARGS"] != "--preview-method auto --highvram" || back["ALLOWED_CUSTOMERS"] != "cust-1,cust-2" || back["OPENAI_API_KEY"] != "sk-proj-example-openai-key-0123" {
		t.Errorf("read back: %v", back)
	}
}

// The ecosystem the older generator wrote, with its comfyui-gpuN service apps and servicePairs.
func TestEcosystemOfTheComfyBox(t *testing.T) {
	rep := migrate.FromEcosystem(readEcosystem(t, "comfy-box/pm2-ecosystem.config.cjs"))
	pm2 := strings.Join(rep.PM2, "\n")
	for _, want := range []string{"PM2 app comfyui-gpu1 (max_restarts 10, min_uptime 10s, restart_delay 5000 ms, max_memory_restart 2G) → service comfyui-gpu1",
		"servicePair redis-worker-comfyui-gpu0 ↔ comfyui-gpu0", "slot comfy-box-3-worker-comfyui-1"} {
		if !strings.Contains(pm2, want) {
			t.Errorf("PM2 mapping lacks %q:\n%s", want, pm2)
		}
	}
	if rep.Env["MACHINE_ID"] != "comfy-box-3" || len(rep.Refused) != 5 || len(rep.Kept) != 0 {
		t.Errorf("MACHINE_ID %q, refused %v, kept %v", rep.Env["MACHINE_ID"], rep.Refused, rep.Kept)
	}
}

func TestParseEnv(t *testing.T) {
	env, err := migrate.ParseEnv(strings.NewReader("# comment\nexport A=1\nB='x, y'\nC=\"q\"\nD=plain # note\n\nE=${OTHER}"), "f")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"A": "1", "B": "x, y", "C": "q", "D": "plain", "E": "${OTHER}"}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	for _, bad := range []string{"JUST TEXT", "K='open", "=v"} {
		if _, err := migrate.ParseEnv(strings.NewReader(bad), "old.env"); err == nil || !strings.Contains(err.Error(), "old.env line 1") {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
	if _, err := migrate.ParseEcosystem(strings.NewReader("module.exports = { apps: [ { name: 'x' } ] };"), "eco.cjs"); err == nil ||
		!strings.Contains(err.Error(), "--from-env") {
		t.Errorf("hand-written ecosystem: %v", err)
	}
}
