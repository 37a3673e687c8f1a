package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/config"
)

func TestDemandSettings(t *testing.T) {
	c, err := load(map[string]string{
		"WORKER_CONNECTORS": "simulation", "MACHINE_ALLOWED_CONNECTORS": "mock",
		"MACHINE_AUTOSCALE_BOUNDS": "simulation:1-4,mock:1-2", "MACHINE_SERVICE_IDLE_TTL": "off",
		"MACHINE_MODEL_CACHE_GB": "50", "MACHINE_MODEL_CATALOG": "/etc/models.json",
	})
	if err != nil {
		t.Fatal(err)
	}
	d := c.Demand
	if !d.Autoscale || d.IdleTTL != 0 || d.Cooldown != 2*time.Minute || d.Bounds["simulation"] != (config.Span{Min: 1, Max: 4}) ||
		d.ModelCacheGB != 50 || d.ModelPrefetch != 2 || len(d.Allowed) != 1 {
		t.Fatalf("demand settings %+v", d)
	}
	off, err := load(map[string]string{"MACHINE_AUTOSCALE": "off"})
	if err != nil || off.Demand.Autoscale || off.Demand.IdleTTL != 30*time.Minute {
		t.Fatalf("MACHINE_AUTOSCALE=off: %+v %v", off.Demand, err)
	}
}

func TestDemandSettingsReportEveryProblem(t *testing.T) {
	_, err := load(map[string]string{
		"WORKER_CONNECTORS": "simulation", "MACHINE_AUTOSCALE": "maybe", "MACHINE_ALLOWED_CONNECTORS": "nope",
		"MACHINE_AUTOSCALE_BOUNDS": "simulation:4-1,replicate:1-2", "MACHINE_MODEL_CACHE_GB": "10",
	})
	if err == nil {
		t.Fatal("bad settings loaded")
	}
	for _, want := range []string{"MACHINE_AUTOSCALE \"maybe\"", "\"simulation:4-1\"",
		"replicate, which is neither", "MACHINE_MODEL_CATALOG is not"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("problems %q do not mention %s", err, want)
		}
	}
}
