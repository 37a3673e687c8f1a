package resources_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/plan"
	"github.com/emp-job-queue/machine/core/resources"
)

const gib = 1024.0

func load(t *testing.T, env map[string]string) (*config.Config, *plan.Plan) {
	t.Helper()
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, p
}

// box is a box with two 24 GB GPUs, 64 GB of RAM, 16 cores, 500 GB free and every port free.
func box(edit func(*resources.Box)) resources.Box {
	b := resources.Box{GPUMemoryMB: []float64{24 * gib, 24 * gib}, RAMMB: 64 * gib, CPUCores: 16, DiskFreeMB: 500 * gib,
		PortFree: func(int) bool { return true }}
	if edit != nil {
		edit(&b)
	}
	return b
}

var (
	sdxl = resources.ModelSet{Manifest: true, ComfyUIInstalled: true, Models: []resources.Model{
		{Dest: "models/checkpoints/sdxl.safetensors", SizeMB: 6.5 * gib, Present: true},
		{Dest: "models/vae/sdxl_vae.safetensors", SizeMB: 320, Present: true},
		{Dest: "models/loras/style.safetensors", SizeMB: 150, Present: true},
	}}
	flux = resources.ModelSet{Manifest: true, Models: []resources.Model{
		{Dest: "models/unet/flux1-dev-fp8.safetensors", SizeMB: resources.EstimateSizeMB("models/unet/x"), Estimated: true},
		{Dest: "models/clip/t5xxl_fp8.safetensors", SizeMB: resources.EstimateSizeMB("models/clip/x"), Estimated: true},
		{Dest: "models/vae/ae.safetensors", SizeMB: resources.EstimateSizeMB("models/vae/x"), Estimated: true},
	}, NodesToInstall: 3}
)

func TestCalculate(t *testing.T) {
	for _, c := range []struct {
		name             string
		env              map[string]string
		models           resources.ModelSet
		box              resources.Box
		refusals         []string // each a substring of one refusal; their number is exact
		warnings         []string
		gpu0VRAMMB       float64 // 0: not checked
		ramMB, diskMB    float64 // 0: not checked
		nothingWarnsElse bool
	}{
		{name: "simulation needs only the machine", env: map[string]string{"WORKER_CONNECTORS": "simulation"},
			box: box(nil), ramMB: 256, nothingWarnsElse: true},
		{name: "ComfyUI with SDXL on each GPU fits", env: map[string]string{"WORKER_CONNECTORS": "comfyui"}, models: sdxl,
			box: box(nil), gpu0VRAMMB: 2*gib + 6.5*gib + 320, ramMB: 256 + 2*(3*gib+6.5*gib+320), diskMB: 0, nothingWarnsElse: true},
		{name: "two Flux instances per GPU do not fit", env: map[string]string{"WORKER_CONNECTORS": "comfyui", "PM2_INSTANCES_PER_GPU": "2"},
			models: flux, box: box(nil),
			refusals:   []string{"GPU 0 has 24.0 GB of memory but comfyui-gpu0-0 and comfyui-gpu0-1 need about 36.8 GB", "GPU 1 has 24.0 GB", "about 77.9 GB of RAM but the box has 64.0 GB"},
			gpu0VRAMMB: 2 * (2*gib + 11.5*gib + 4.6*gib + 320), diskMB: 10*gib + 3*256 + 11.5*gib + 4.6*gib + 320},
		{name: "the health port collides with ComfyUI", env: map[string]string{"WORKER_CONNECTORS": "comfyui", "MACHINE_HEALTH_PORT": "8188"},
			models: sdxl, box: box(nil), refusals: []string{"port 8188 is wanted by both MACHINE_HEALTH_PORT and comfyui-gpu0"}},
		{name: "ComfyUI on a box without GPUs", env: map[string]string{"WORKER_CONNECTORS": "comfyui:1", "MACHINE_HAS_GPU": "false"},
			models: sdxl, box: box(func(b *resources.Box) { b.GPUMemoryMB = nil }),
			refusals: []string{"comfyui-cpu0 needs a GPU but this box has none"}},
		{name: "not enough RAM for Flux", env: map[string]string{"WORKER_CONNECTORS": "comfyui"}, models: flux,
			box: box(func(b *resources.Box) { b.RAMMB = 16 * gib }), refusals: []string{"about 39.1 GB of RAM but the box has 16.0 GB"}},
		{name: "not enough disk to install", env: map[string]string{"WORKER_CONNECTORS": "comfyui"}, models: flux,
			box: box(func(b *resources.Box) { b.DiskFreeMB = 20 * gib }), refusals: []string{"of disk but the box has 20.0 GB"}},
		{name: "more GPUs planned than the box has", env: map[string]string{"WORKER_CONNECTORS": "comfyui", "MACHINE_GPU_COUNT": "3"},
			models: sdxl, box: box(nil), refusals: []string{"comfyui-gpu2 are planned on GPU 2, which this box does not have (it has 2)"}},
		{name: "a busy browser on one core", env: map[string]string{"WORKER_CONNECTORS": "playwright:4", "PLAYWRIGHT_MAX_TABS": "4"},
			box: box(func(b *resources.Box) { b.CPUCores = 1 }), warnings: []string{"keeps about 3.5 cores busy but the box has 1.0 cores"}},
		{name: "a port in use, simulated GPUs, no manifest", env: map[string]string{"WORKER_CONNECTORS": "comfyui"},
			box:      box(func(b *resources.Box) { b.Simulated = true; b.PortFree = func(p int) bool { return p != 8189 } }),
			warnings: []string{"port 8189 (comfyui-gpu1) is in use", "the GPUs are simulated", "no COMFYUI_MANIFEST"}},
		{name: "close to a GPU's memory", env: map[string]string{"WORKER_CONNECTORS": "comfyui"}, models: flux,
			box: box(func(b *resources.Box) { b.GPUMemoryMB = []float64{19 * gib, 19 * gib} }), warnings: []string{"GPU 0: comfyui-gpu0 need about 18.4 GB of its 19.0 GB"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, p := load(t, c.env)
			r := resources.Calculate(cfg, p, c.models, c.box)
			var refusals, warnings []string
			for _, f := range r.Findings {
				if strings.Count(f.Message, ";") > 1 || strings.Contains(f.Message, "\n") {
					t.Errorf("not one sentence: %q", f.Message)
				}
				if f.Refuse {
					refusals = append(refusals, f.Message)
				} else {
					warnings = append(warnings, f.Message)
				}
			}
			if len(refusals) != len(c.refusals) || r.Refusals() != len(c.refusals) {
				t.Errorf("refusals %q, want %d matching %q", refusals, len(c.refusals), c.refusals)
			}
			match := func(got []string, want string) bool {
				for _, g := range got {
					if strings.Contains(g, want) {
						return true
					}
				}
				return false
			}
			for _, w := range c.refusals {
				if !match(refusals, w) {
					t.Errorf("no refusal says %q: %q", w, refusals)
				}
			}
			for _, w := range c.warnings {
				if !match(warnings, w) {
					t.Errorf("no warning says %q: %q", w, warnings)
				}
			}
			if c.nothingWarnsElse && len(warnings) > 0 {
				t.Errorf("unexpected warnings %q", warnings)
			}
			if c.gpu0VRAMMB > 0 && (len(r.GPUs) == 0 || math.Abs(r.GPUs[0].VRAMMB.Need-c.gpu0VRAMMB) > 1) {
				t.Errorf("GPU 0 needs %+v, want %.0f MB", r.GPUs, c.gpu0VRAMMB)
			}
			if c.ramMB > 0 && math.Abs(r.RAMMB.Need-c.ramMB) > 1 {
				t.Errorf("RAM need %.0f MB, want %.0f", r.RAMMB.Need, c.ramMB)
			}
			if c.diskMB > 0 && math.Abs(r.DiskMB.Need-c.diskMB) > 1 {
				t.Errorf("disk need %.0f MB, want %.0f", r.DiskMB.Need, c.diskMB)
			}
		})
	}
}

// plan --json carries the numbers: the report survives JSON with its needs and the box's amounts.
func TestReportJSON(t *testing.T) {
	cfg, p := load(t, map[string]string{"WORKER_CONNECTORS": "comfyui"})
	b := box(func(b *resources.Box) { b.DiskFreeMB = math.NaN() })
	data, err := json.Marshal(resources.Calculate(cfg, p, sdxl, b))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"gpus":[{"index":0,"services":["comfyui-gpu0"],"vram_mb":{"need":9024,"have":24576}}`,
		`"disk_mb":{"need":0,"have":null}`, `"ports":[{"port":8188,"owner":"comfyui-gpu0","free":true}`, `"cpu_cores":{"need":2.5,"have":16}`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("JSON lacks %s:\n%s", want, data)
		}
	}
}
