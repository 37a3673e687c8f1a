package config_test

import (
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/config"
)

// FuzzLoad: no environment makes Load panic; a rejection always says which variable is wrong.
func FuzzLoad(f *testing.F) {
	f.Add("comfyui:2,openai", "2", "redis://:pw@host:6379/0", "9090", `{"a":[1]}`, "strict")
	f.Add(",,,:", "-5", "http://x", "999999", "[", "medium")
	f.Add("simulation:auto", "", "", "0", "", "")
	f.Fuzz(func(t *testing.T, connectors, gpus, url, port, caps, isolation string) {
		env := map[string]string{"WORKER_CONNECTORS": connectors, "MACHINE_GPU_COUNT": gpus, "HUB_REDIS_URL": url,
			"MACHINE_HEALTH_PORT": port, "WORKER_CAPABILITIES": caps, "WORKER_CUSTOMER_ISOLATION": isolation}
		c, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err == nil {
			if len(c.Connectors) == 0 {
				t.Fatal("a valid config without connectors")
			}
			return
		}
		for _, p := range err.(config.Problems) {
			if !strings.ContainsAny(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
				t.Fatalf("problem %q names no variable", p)
			}
		}
		if strings.Contains(url, ":pw@") && strings.Contains(err.Error(), ":pw@") {
			t.Fatal("an error shows the Redis password")
		}
	})
}
