package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// `machine plan` refuses a configuration the box cannot run, with the sentence saying why, and
// --json carries the numbers.
func TestPlanRequirements(t *testing.T) {
	env := map[string]string{"MACHINE_ID": "box", "GPU_MODE": "mock", "MACHINE_GPU_COUNT": "2", "MACHINE_GPU_MEMORY_GB": "24",
		"WORKER_CONNECTORS": "comfyui", "MACHINE_RAM_GB": "64", "MACHINE_CPU_CORES": "16", "MACHINE_HEALTH_PORT": "0"}
	out, err := command(env, "plan", "--json").Output()
	if err != nil {
		t.Fatalf("plan --json: %v\n%s", err, out)
	}
	var got struct {
		Slots        []any `json:"slots"`
		Requirements struct {
			GPUs []struct {
				Index  int
				VRAMMB struct{ Need, Have float64 } `json:"vram_mb"`
			} `json:"gpus"`
			RAMMB    struct{ Need, Have float64 } `json:"ram_mb"`
			Findings []struct {
				Refuse  bool
				Message string
			}
		} `json:"requirements"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("plan --json is not JSON: %v\n%s", err, out)
	}
	r := got.Requirements
	if len(got.Slots) != 2 || len(r.GPUs) != 2 || r.GPUs[1].VRAMMB.Have != 24*1024 || r.GPUs[1].VRAMMB.Need <= 0 || r.RAMMB.Have != 64*1024 {
		t.Errorf("plan --json = %s", out)
	}

	env["PM2_INSTANCES_PER_GPU"] = "3"
	env["MACHINE_GPU_MEMORY_GB"] = "4"
	text, err := command(env, "plan").CombinedOutput()
	if err == nil || !strings.Contains(string(text), "refused: GPU 0 has 4.0 GB of memory but comfyui-gpu0-0, comfyui-gpu0-1 and comfyui-gpu0-2 need about 6.0 GB") ||
		!strings.Contains(string(text), "machine: this box cannot run the configuration (2 problems, listed in the plan)") {
		t.Errorf("an impossible plan: %v\n%s", err, text)
	}
}
