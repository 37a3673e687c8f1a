package config_test

import (
	"bufio"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/config"
)

// Every variable the old machine and worker read (extracted from emp-job-queue, see the file's
// header) has a treatment, and every treatment that names a replacement names a real one.
func TestEveryOldVariableIsClassified(t *testing.T) {
	f, err := os.Open("testdata/emp-variables.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" || strings.HasPrefix(name, "#") {
			continue
		}
		n++
		v, ok := config.LookupOld(name)
		if !ok {
			t.Errorf("%s: the old runtime read it, but it has no treatment in legacy_vars.go", name)
			continue
		}
		if v.Note == "" || (v.Treatment == config.Renamed && v.Replacement == "") {
			t.Errorf("%s: treatment %+v lacks its note or replacement", name, v)
		}
	}
	if n < 300 {
		t.Errorf("only %d old variables read from testdata", n)
	}
}

func TestOldNamesAreRead(t *testing.T) {
	c, err := load(map[string]string{"GPU_MODE": "mock", "NUM_GPUS": "3", "POLL_INTERVAL_MS": "1000", "OLLAMA_PORT": "11500",
		"OLLAMA_REQUEST_TIMEOUT_MS": "120000", "WORKER_RAM_GB": "48", "A1111_PORT": "7900", "WORKSPACE_PATH": "/data",
		"WEBSOCKET_INACTIVITY_TIMEOUT_MS": "30000"})
	if err != nil {
		t.Fatal(err)
	}
	if c.GPUCount != 3 || c.PollInterval != time.Second || c.Ollama.BasePort != 11500 || c.Ollama.Timeout != 2*time.Minute ||
		c.RAMGB != 48 || c.A1111.BasePort != 7900 || c.Workspace != "/data" || c.ComfyUI.Inactivity != 30*time.Second {
		t.Errorf("config = %+v", c)
	}
	var renamed []string
	for _, n := range c.Legacy {
		if n.Treatment == config.Renamed {
			renamed = append(renamed, n.Var)
		}
	}
	if len(renamed) != 8 {
		t.Errorf("renamed notes = %v", c.Legacy)
	}
	// NUM_GPUS counted only simulated GPUs: on real GPUs it is ignored, with a sentence.
	c, err = load(map[string]string{"GPU_MODE": "actual", "NUM_GPUS": "3"})
	if err != nil {
		t.Fatal(err)
	}
	if c.GPUCount == 3 || len(c.Legacy) != 1 || c.Legacy[0].Treatment != config.Ignored || !strings.Contains(c.Legacy[0].Sentence, "MACHINE_GPU_COUNT") {
		t.Errorf("NUM_GPUS on real GPUs: count %d, notes %+v", c.GPUCount, c.Legacy)
	}
}

func TestOldAndNewNamesMustAgree(t *testing.T) {
	_, err := load(map[string]string{"POLL_INTERVAL_MS": "1000", "WORKER_POLL_INTERVAL_MS": "2000"})
	if err == nil || !strings.Contains(err.Error(), "POLL_INTERVAL_MS and WORKER_POLL_INTERVAL_MS disagree") {
		t.Fatalf("err = %v", err)
	}
	if _, err := load(map[string]string{"POLL_INTERVAL_MS": "1000", "WORKER_POLL_INTERVAL_MS": "1000"}); err != nil {
		t.Errorf("agreeing names: %v", err)
	}
	if _, err := load(map[string]string{"OLLAMA_REQUEST_TIMEOUT_MS": "soon"}); err == nil || !strings.Contains(err.Error(), "set OLLAMA_TIMEOUT_SECONDS instead") {
		t.Errorf("bad old value: %v", err)
	}
}

// What the machine cannot honour stops it, in one sentence each, secrets unshown; a value it
// honours anyway is only noted.
func TestRefusedValues(t *testing.T) {
	_, err := load(map[string]string{"COMFYUI_PORT_INCREMENT": "2", "AZURE_STORAGE_KEY": "azure-secret-value", "COMPONENTS": "txt2img-flux",
		"WORKER_COMFYUI_REMOTE_PASSWORD": "hunter22", "TEST_MODE": "true"})
	if err == nil {
		t.Fatal("refused values were accepted")
	}
	for _, want := range []string{"COMFYUI_PORT_INCREMENT=2 cannot be honoured", "AZURE_STORAGE_KEY cannot be honoured", "COMFYUI_MANIFEST",
		"WORKER_COMFYUI_REMOTE_API_KEY", "MACHINE_HAS_GPU=false"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	for _, secret := range []string{"azure-secret-value", "hunter22"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows a secret: %v", err)
		}
	}
	c, err := load(map[string]string{"COMFYUI_PORT_INCREMENT": "1", "TEST_MODE": "false", "PM2_HOME": "/workspace/.pm2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Legacy) != 3 || slices.ContainsFunc(c.Legacy, func(n config.LegacyNote) bool { return n.Treatment != config.Ignored }) {
		t.Errorf("notes = %+v", c.Legacy)
	}
}

// The old worker's capability variables are advertised as it advertised them.
func TestOldCapabilityVariables(t *testing.T) {
	c, err := load(map[string]string{"WORKER_FEATURES": `["upscale","inpaint"]`, "WORKER_REGION": "eu-west", "WORKER_COUNTRY": "ie",
		"WORKER_COMPLIANCE": "gdpr", "WORKER_COST_TIER": "premium", "WORKER_RATE_PER_JOB": "0.25", "WORKER_MAX_BATCH_SIZE": "4",
		"WORKER_DEBUGGING_ENABLED": "true", "WORKER_MODELS": "sdxl,flux", "WORKER_SLA_TIER": "gold",
		"WORKER_CAPABILITIES": `{"sla_tier":"platinum"}`})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"features": []string{"upscale", "inpaint"}, "max_batch_size": 4, "debugging_enabled": true,
		"available_models": []string{"sdxl", "flux"}, "sla_tier": "platinum",
		"location": map[string]any{"region": "eu-west", "country": "ie", "compliance_zones": []string{"gdpr"}},
		"cost":     map[string]any{"tier": "premium", "rate_per_job": 0.25},
	}
	if !reflect.DeepEqual(c.CustomCapabilities, want) {
		t.Errorf("capabilities = %#v\nwant %#v", c.CustomCapabilities, want)
	}
}

// The old worker types' settings load; whether gemini has its key is the registry's check
// (core/connectors/registry), as for every connector's key.
func TestWorkerTypeSettings(t *testing.T) {
	c, err := load(map[string]string{"WORKERS": "ollama:1,a1111:auto,gemini:1", "GEMINI_API_KEY": "g-key", "OLLAMA_DEFAULT_MODELS": "qwen3:0.6b, tinyllama"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Ollama.Models, []string{"qwen3:0.6b", "tinyllama"}) || c.A1111.Commit != config.DefaultA1111Commit || c.Ollama.BasePort != 11434 {
		t.Errorf("config = %+v %+v", c.Ollama, c.A1111)
	}
}
