package config_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/config"
)

func load(env map[string]string) (*config.Config, error) {
	return config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
}

func TestDefaultsRunTheDemo(t *testing.T) {
	c, err := load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Embedded() || c.GPUCount != 2 || !c.SimulatedGPUs || len(c.Connectors) != 1 || c.Connectors[0].Name != "simulation" {
		t.Fatalf("defaults = %+v", c)
	}
	if c.HealthPort != 9090 || c.StatusInterval != 10*time.Second || c.HeartbeatInterval != 30*time.Second || c.JobTimeout != 30*time.Minute {
		t.Errorf("timing defaults = %+v", c)
	}
}

func TestConnectorSyntax(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"WORKER_CONNECTORS": "comfyui,openai", "OPENAI_API_KEY": "k"}, "comfyui:auto openai:auto"},
		{map[string]string{"WORKER_CONNECTORS": "comfyui:2, openai:1 ,mock:auto", "OPENAI_API_KEY": "k"}, "comfyui:2 openai:1 mock:auto"},
		{map[string]string{"WORKERS": "simulation:3"}, "simulation:3"},
		{map[string]string{"WORKERS": "mock:1", "WORKER_CONNECTORS": "mock:1"}, "mock:1"},
	}
	for _, tc := range cases {
		c, err := load(tc.env)
		if err != nil {
			t.Errorf("%v: %v", tc.env, err)
			continue
		}
		var got []string
		for _, x := range c.Connectors {
			if x.Auto {
				got = append(got, x.Name+":auto")
			} else {
				got = append(got, x.Name+":"+strconv.Itoa(x.Count))
			}
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%v parsed as %v, want %s", tc.env, got, tc.want)
		}
	}
}

// Every problem is reported at once, each naming its variable and a fix.
func TestEveryProblemAtOnce(t *testing.T) {
	_, err := load(map[string]string{
		"WORKER_CONNECTORS": "comfyui:x,Bad Name!", "MACHINE_GPU_COUNT": "-1", "HUB_REDIS_URL": "http://user:hunter2@x",
		"MACHINE_HEALTH_PORT": "99999", "WORKER_CUSTOMER_ISOLATION": "medium", "WORKER_CAPABILITIES": "[1]",
		"MACHINE_ID": "bad id!", "WORKERS": "mock",
	})
	problems, ok := err.(config.Problems)
	if !ok {
		t.Fatalf("error %v is not a Problems list", err)
	}
	for _, want := range []string{"comfyui:x", "Bad Name!", "MACHINE_GPU_COUNT", "HUB_REDIS_URL", "MACHINE_HEALTH_PORT",
		"WORKER_CUSTOMER_ISOLATION", "WORKER_CAPABILITIES", "MACHINE_ID", "WORKERS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("problems do not mention %s:\n%v", want, err)
		}
	}
	if len(problems) < 9 {
		t.Errorf("%d problems reported, want at least 9:\n%v", len(problems), err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Error("the error shows the Redis password")
	}
}

func TestRedactURL(t *testing.T) {
	for raw, want := range map[string]string{
		"redis://default:hunter2@redis.example:6379/0": "redis://default:xxxxx@redis.example:6379/0",
		"redis://redis.example:6379":                   "redis://redis.example:6379",
		"rediss://:hunter2@redis.example/":             "rediss://:xxxxx@redis.example/",
		// What follows the host and is not a database number may be a misplaced password.
		"redis://redis.example#:hunter2@":           "redis://redis.example (the rest hidden)",
		"redis://redis.example/:hunter2@":           "redis://redis.example (the rest hidden)",
		"redis://redis.example:6379/0?pass=hunter2": "redis://redis.example:6379 (the rest hidden)",
		"redis://:hunter2@redis.example/0#x":        "redis://:xxxxx@redis.example (the rest hidden)",
		"not a url hunter2":                         "(hidden: not a URL of the form redis://host:port)",
	} {
		if got := config.RedactURL(raw); got != want || strings.Contains(got, "hunter2") {
			t.Errorf("RedactURL(%q) = %q, want %q", raw, got, want)
		}
	}
}

func TestListsAndModels(t *testing.T) {
	c, err := load(map[string]string{"ALLOWED_CUSTOMERS": `["a","b"]`, "DENIED_CUSTOMERS": "c, d", "WORKER_MODELS": `{"comfyui":["sdxl"]}`,
		"SERVICE_INSTALL_TIMEOUT": "600", "MACHINE_DRAIN_TIMEOUT": "2m"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.AllowedCustomers) != 2 || len(c.DeniedCustomers) != 2 || c.DeniedCustomers[1] != "d" || c.Models["comfyui"][0] != "sdxl" {
		t.Errorf("lists = %v %v %v", c.AllowedCustomers, c.DeniedCustomers, c.Models)
	}
	if c.InstallTimeout != 10*time.Minute || c.DrainTimeout != 2*time.Minute {
		t.Errorf("durations = %v %v", c.InstallTimeout, c.DrainTimeout)
	}
}

func TestKeysFromFiles(t *testing.T) {
	keyFile := t.TempDir() + "/key"
	_ = os.WriteFile(keyFile, []byte("sk-from-file\n"), 0o600)
	c, err := load(map[string]string{"WORKER_CONNECTORS": "openai", "OPENAI_API_KEY_FILE": keyFile})
	if err != nil || c.OpenAI.APIKey != "sk-from-file" {
		t.Fatalf("key from file: %v %v", c, err)
	}
}

// A configuration with problems still comes back, filled with defaults where values were bad,
// so commands can show what they can next to the problems.
func TestProblemsComeWithWhatCouldBeRead(t *testing.T) {
	c, err := load(map[string]string{"MACHINE_ID": "box-9", "MACHINE_HEALTH_PORT": "99999", "MACHINE_RUN_DIR": "/run/m"})
	if err == nil || c == nil || c.MachineID != "box-9" || c.HealthPort != 9090 || c.ControlSocket != "/run/m/control.sock" {
		t.Fatalf("Load = %+v, %v", c, err)
	}
}
