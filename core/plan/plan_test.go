package plan_test

import (
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/plan"
)

func newPlan(t testing.TB, env map[string]string) (*plan.Plan, error) {
	t.Helper()
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return plan.New(cfg)
}

func TestSlotsAndServices(t *testing.T) {
	p, err := newPlan(t, map[string]string{"MACHINE_ID": "box", "MACHINE_GPU_COUNT": "2",
		"WORKER_CONNECTORS": "comfyui,openai:2,playwright:2,simulation:1", "OPENAI_API_KEY": "k"})
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		id, svc string
		gpu     int
	}
	want := []row{
		{"box-worker-comfyui-0", "comfyui-gpu0", 0}, {"box-worker-comfyui-1", "comfyui-gpu1", 1},
		{"box-worker-openai-0", "", -1}, {"box-worker-openai-1", "", -1},
		{"box-worker-playwright-0", "browser", -1}, {"box-worker-playwright-1", "browser", -1},
		{"box-worker-simulation-0", "", 0},
	}
	if len(p.Slots) != len(want) {
		t.Fatalf("%d slots, want %d: %+v", len(p.Slots), len(want), p.Slots)
	}
	for i, w := range want {
		s := p.Slots[i]
		if s.ID != w.id || s.Service != w.svc || s.GPU != w.gpu {
			t.Errorf("slot %d = %s/%s/gpu%d, want %s/%s/gpu%d", i, s.ID, s.Service, s.GPU, w.id, w.svc, w.gpu)
		}
	}
	ports := map[string]int{}
	for _, s := range p.Services {
		ports[s.Name] = s.Port
	}
	if ports["comfyui-gpu0"] != 8188 || ports["comfyui-gpu1"] != 8189 || ports["browser"] != 9222 || len(ports) != 3 {
		t.Errorf("services = %v", ports)
	}
}

func TestInstancesPerGPU(t *testing.T) {
	p, err := newPlan(t, map[string]string{"MACHINE_ID": "b", "MACHINE_GPU_COUNT": "2", "PM2_INSTANCES_PER_GPU": "2", "WORKER_CONNECTORS": "comfyui"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range p.Services {
		got = append(got, s.Name)
	}
	if strings.Join(got, ",") != "comfyui-gpu0-0,comfyui-gpu0-1,comfyui-gpu1-0,comfyui-gpu1-1" || p.Services[3].Port != 8191 {
		t.Errorf("services = %v", p.Services)
	}
}

func TestCPUOnlyMachine(t *testing.T) {
	p, err := newPlan(t, map[string]string{"MACHINE_ID": "b", "MACHINE_GPU_COUNT": "0", "WORKER_CONNECTORS": "comfyui"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Slots) != 1 || p.Slots[0].GPU != plan.NoGPU || p.Slots[0].Binding != "cpu" || p.Services[0].Name != "comfyui-cpu0" {
		t.Errorf("CPU-only plan = %+v", p)
	}
}

func TestTooManyGPUSlots(t *testing.T) {
	_, err := newPlan(t, map[string]string{"MACHINE_GPU_COUNT": "2", "WORKER_CONNECTORS": "comfyui:3"})
	if err == nil || !strings.Contains(err.Error(), "PM2_INSTANCES_PER_GPU") {
		t.Fatalf("err = %v, want a clear refusal", err)
	}
}
