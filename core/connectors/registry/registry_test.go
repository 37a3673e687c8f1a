package registry_test

import (
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/connectors/registry"
)

func load(t testing.TB, env map[string]string) *config.Config {
	t.Helper()
	c, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Every problem of the configured connectors comes at once: unknown names and missing keys.
func TestCheckListsEveryConnectorProblem(t *testing.T) {
	err := registry.Check(load(t, map[string]string{"WORKER_CONNECTORS": "openai,replicate,runpod,comfyui-remote,nonsense"}))
	problems, ok := err.(config.Problems)
	if !ok || len(problems) != 5 {
		t.Fatalf("Check = %v, want 5 problems", err)
	}
	for _, want := range []string{"OPENAI_API_KEY", "REPLICATE_API_TOKEN", "RUNPOD_API_KEY", "WORKER_COMFYUI_REMOTE_HOST", `"nonsense"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("problems lack %s:\n%v", want, err)
		}
	}
	if err := registry.Check(load(t, map[string]string{"WORKER_CONNECTORS": "openai,mock", "OPENAI_API_KEY": "k"})); err != nil {
		t.Errorf("a complete configuration: %v", err)
	}
}

// Every descriptor is whole: job services, a factory that builds it from the configuration,
// and, where it needs a service, a kind with an installer and a port.
func TestDescriptorsAreWhole(t *testing.T) {
	cfg := load(t, nil)
	seen := map[string]bool{}
	for _, name := range registry.Names() {
		d, _ := registry.Lookup(name)
		if d.New == nil || len(d.JobServices) == 0 || len(d.StatusServices) == 0 {
			t.Errorf("%s: incomplete descriptor %+v", name, d)
			continue
		}
		if d.New(connectors.Env{Config: cfg, ServiceURL: "http://127.0.0.1:1"}) == nil {
			t.Errorf("%s: New built nothing", name)
		}
		if s := d.Service; s != nil && (s.Kind == "" || s.Install == nil || s.BasePort == nil) {
			t.Errorf("%s: incomplete service %+v", name, s)
		}
		if seen[name] {
			t.Errorf("%s listed twice", name)
		}
		seen[name] = true
	}
}
