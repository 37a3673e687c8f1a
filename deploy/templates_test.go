package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors/registry"
	"github.com/emp-job-queue/machine/core/plan"
	"github.com/emp-job-queue/machine/deploy"
)

// dummySecret is what an operator would put in a secret variable.
func dummySecret(key string) string {
	if key == "HUB_REDIS_URL" {
		return "redis://:dummy-password@redis.internal:6379/0"
	}
	return "dummy-" + strings.ToLower(key)
}

// Every template reads the same in Docker and a shell, names only variables the machine reads,
// and, once its secrets are filled, is a valid configuration with a plan.
func TestTemplatesAreValidConfigurations(t *testing.T) {
	names := deploy.TemplateNames()
	for _, want := range []string{"api-only", "browser", "comfyui-gpu", "hybrid", "simulation"} {
		if !slices.Contains(names, want) {
			t.Errorf("no template %s (have %v)", want, names)
		}
	}
	src, err := os.ReadFile(filepath.Join(repoRoot, "core", "config", "load.go"))
	if err != nil {
		t.Fatal(err)
	}
	dockerfile, _ := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	commit := regexp.MustCompile(`(?m)^ARG COMFYUI_COMMIT=(\S+)$`).FindSubmatch(dockerfile)
	for _, tpl := range deploy.Templates() {
		t.Run(tpl.Name, func(t *testing.T) {
			if tpl.Summary == "" {
				t.Error("the first line must be `# machine template: NAME - what it is for`")
			}
			env, err := deploy.ParseEnv(tpl.Body)
			if err != nil {
				t.Fatal(err)
			}
			for k := range env {
				base := strings.TrimSuffix(k, "_FILE")
				if !strings.Contains(string(src), `"`+k+`"`) && !strings.Contains(string(src), `"`+base+`"`) {
					t.Errorf("%s is not a variable core/config reads; misspelt?", k)
				}
			}
			if tpl.Name == "api-only" {
				cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
				if err == nil {
					err = registry.Check(cfg) // the connectors' own checks: their keys
				}
				if err == nil || !strings.Contains(err.Error(), "OPENAI_API_KEY") {
					t.Errorf("api-only without its secrets: %v; want the missing key named", err)
				}
			}
			for _, s := range tpl.Secrets {
				if env[s] != "" {
					t.Errorf("secret %s has a value in the template; leave it empty for the operator", s)
				}
				env[s] = dummySecret(s)
			}
			if v, ok := env["COMFYUI_COMMIT"]; ok && (commit == nil || v != string(commit[1])) {
				t.Errorf("COMFYUI_COMMIT %s differs from the image's build arg, so boot would install another ComfyUI", v)
			}
			cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
			if err != nil {
				t.Fatalf("with its secrets filled: %v", err)
			}
			if err := registry.Check(cfg); err != nil {
				t.Fatalf("with its secrets filled: %v", err)
			}
			if _, err := plan.New(cfg); err != nil {
				t.Fatalf("plan: %v", err)
			}
		})
	}
}

func TestParseEnvReportsEveryBadLine(t *testing.T) {
	_, err := deploy.ParseEnv([]byte("# ok\nA=1\nlower=2\nB=two words\nA=3\nC=\"quoted\"\n"))
	if err == nil {
		t.Fatal("bad env file accepted")
	}
	for _, want := range []string{"line 3", "line 4", "line 5 sets A a second time", "line 6"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	env, err := deploy.ParseEnv([]byte("A=\nB=x=y\n"))
	if err != nil || env["A"] != "" || env["B"] != "x=y" {
		t.Errorf("ParseEnv = %v, %v", env, err)
	}
}
