package deploy_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/deploy"
	"github.com/emp-job-queue/machine/internal/dockerfile"
)

const repoRoot = ".."

// composeFile is the part of the Compose specification compose.yaml uses. Decoding is strict:
// a misspelt key fails the test instead of being ignored by it (and by Compose's own warning).
type composeFile struct {
	Name     string                    `json:"name"`
	XMachine map[string]any            `json:"x-machine"`
	Services map[string]composeService `json:"services"`
}

type composeService struct {
	Image           string                                `json:"image"`
	Build           *struct{ Context, Target string }     `json:"build"`
	EnvFile         string                                `json:"env_file"`
	DependsOn       map[string]struct{ Condition string } `json:"depends_on"`
	StopGracePeriod string                                `json:"stop_grace_period"`
	Restart         string                                `json:"restart"`
	Hostname        string                                `json:"hostname"`
	Environment     map[string]string                     `json:"environment"`
	Ports           []string                              `json:"ports"`
	Profiles        []string                              `json:"profiles"`
	Entrypoint      []string                              `json:"entrypoint"`
	Command         []string                              `json:"command"`
	Healthcheck     *struct {
		Test              []string
		Interval, Timeout string
		Retries           int
	} `json:"healthcheck"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return c
}

func loadDockerfile(t *testing.T) *dockerfile.File {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := dockerfile.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// dockerStages are the stage names of the Dockerfile.
func dockerStages(t *testing.T) []string { return loadDockerfile(t).StageNames() }

// imageEnv is the environment an image target's ENV gives the machine.
func imageEnv(t *testing.T, target string) map[string]string {
	t.Helper()
	s := loadDockerfile(t).Stage(target)
	if s == nil {
		t.Fatalf("no Dockerfile stage %q", target)
	}
	env := map[string]string{}
	for k, v := range s.Env {
		env[k] = v
	}
	return env
}

// The local stack: Redis that never evicts, machines whose env file and overrides make a valid
// configuration pointed at that Redis, a stop grace period above the drain timeout, distinct
// identities and ports, a second machine only under a profile, and a feeder submitting jobs.
func TestComposeStack(t *testing.T) {
	c := loadCompose(t)
	redis, ok := c.Services["redis"]
	if !ok || redis.Healthcheck == nil || !slices.Contains(redis.Command, "noeviction") {
		t.Fatalf("want a redis service with a health check and maxmemory-policy noeviction, got %+v", redis)
	}
	machines := 0
	ids, ports := map[string]bool{}, map[string]bool{}
	for name, s := range c.Services {
		if s.Build != nil && s.Image != "" && !strings.HasSuffix(s.Image, ":"+s.Build.Target) {
			t.Errorf("%s: image %s is not named after its target %s", name, s.Image, s.Build.Target)
		}
		if s.EnvFile == "" {
			continue
		}
		machines++
		if !slices.Contains(dockerStages(t), s.Build.Target) {
			t.Errorf("%s builds target %q, not a Dockerfile stage %v", name, s.Build.Target, dockerStages(t))
		}
		if s.DependsOn["redis"].Condition != "service_healthy" {
			t.Errorf("%s must wait for redis to be healthy", name)
		}
		data, err := os.ReadFile(filepath.Join(repoRoot, s.EnvFile))
		if err != nil {
			t.Fatalf("%s: env_file: %v", name, err)
		}
		fileEnv, err := deploy.ParseEnv(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		env := imageEnv(t, s.Build.Target)
		for k, v := range fileEnv {
			env[k] = v
		}
		for k, v := range s.Environment {
			env[k] = v
		}
		cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err != nil {
			t.Fatalf("%s: the configuration is invalid: %v", name, err)
		}
		if !strings.HasPrefix(cfg.RedisURL, "redis://redis:6379") || cfg.GPUMode != "mock" || cfg.Connectors[0].Name != "simulation" {
			t.Errorf("%s: broker %s, GPU_MODE %s, connectors %v; want the compose redis, simulated GPUs and simulation", name, cfg.RedisURL, cfg.GPUMode, cfg.Connectors)
		}
		grace, err := time.ParseDuration(s.StopGracePeriod)
		if err != nil || grace <= cfg.DrainTimeout {
			t.Errorf("%s: stop_grace_period %q must exceed MACHINE_DRAIN_TIMEOUT %s", name, s.StopGracePeriod, cfg.DrainTimeout)
		}
		if ids[cfg.MachineID] {
			t.Errorf("%s: MACHINE_ID %s is used twice", name, cfg.MachineID)
		}
		ids[cfg.MachineID] = true
		for _, p := range s.Ports {
			host, inside, _ := strings.Cut(p, ":")
			if inside != env["MACHINE_HEALTH_PORT"] || ports[host] {
				t.Errorf("%s: port %s must publish MACHINE_HEALTH_PORT on a host port of its own", name, p)
			}
			ports[host] = true
		}
		if name != "machine" && !slices.Contains(s.Profiles, "second") {
			t.Errorf("%s must be under the profile second, so a plain up starts one machine", name)
		}
	}
	if machines < 2 {
		t.Errorf("want a machine and a second one under a profile; found %d machines", machines)
	}
	feeder, ok := c.Services["feeder"]
	if !ok || !strings.Contains(strings.Join(feeder.Command, " "), "machine submit --service simulation") ||
		!strings.HasPrefix(feeder.Environment["HUB_REDIS_URL"], "redis://redis:6379") {
		t.Errorf("want a feeder that submits simulation jobs to the compose redis, got %+v", feeder)
	}
}
