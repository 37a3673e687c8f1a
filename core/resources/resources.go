// Package resources estimates what a plan needs from the box — GPU memory per GPU, RAM, disk,
// CPU and ports — and compares it with what the box has, as one sentence per warning or
// refusal. Calculate is a pure function of the plan, the configuration, the model set and the
// box; Models and the caller read the filesystem and the hardware.
//
// The figures are estimates for planning, named in the costs below: ComfyUI's memory depends
// on the workflow, so it is sized from the largest models it may load together.
package resources

import (
	"fmt"
	"math"
	"path"
	"slices"
	"strings"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors/registry"
	"github.com/emp-job-queue/machine/core/plan"
)

// Estimates, in MB and cores. ComfyUI's disk is its checkout and venv with PyTorch and its CUDA
// wheels; its memory before models is the Python runtime, PyTorch and the CUDA context.
const (
	machineRAMMB = 256
	machineCPU   = 0.5

	comfyInstallDiskMB = 10 * 1024
	comfyNodeDiskMB    = 256
	comfyBaseVRAMMB    = 2 * 1024
	comfyBaseRAMMB     = 3 * 1024
	comfyCPU           = 1

	browserRAMMB    = 512
	browserTabRAMMB = 256
	browserCPU      = 1
	browserTabCPU   = 0.5

	remoteSlotRAMMB = 16
	remoteSlotCPU   = 0.05

	warnShare = 0.9 // a need above this share of what the box has is worth a warning
)

// Box is what the machine has. Unknown amounts are NaN.
type Box struct {
	GPUMemoryMB []float64 // by GPU index
	Simulated   bool      // the GPUs are the fake source's
	RAMMB       float64
	CPUCores    float64
	DiskFreeMB  float64 // on the filesystem ComfyUI and the cache go to
	// PortFree reports whether nothing listens on a port; nil: not checked.
	PortFree func(port int) bool
}

// ModelSet is what ComfyUI's manifest asks for, and what is installed already.
type ModelSet struct {
	Models           []Model
	NodesToInstall   int
	ComfyUIInstalled bool
	Manifest         bool // a manifest was given
}

// Model is one model file.
type Model struct {
	Dest      string  `json:"destination"` // relative to the ComfyUI directory, e.g. models/checkpoints/x.safetensors
	SizeMB    float64 `json:"size_mb"`
	Estimated bool    `json:"estimated"` // sized from its folder, not from the file
	Present   bool    `json:"present"`
}

// Amount is a need against what the box has (nil: unknown).
type Amount struct {
	Need float64  `json:"need"`
	Have *float64 `json:"have"`
}

// ServiceNeed is what one planned service instance needs.
type ServiceNeed struct {
	Name   string  `json:"name"`
	Kind   string  `json:"kind"`
	GPU    int     `json:"gpu"`
	Port   int     `json:"port"`
	VRAMMB float64 `json:"vram_mb"`
	RAMMB  float64 `json:"ram_mb"`
	CPU    float64 `json:"cpu_cores"`
}

// GPUNeed is the memory the services on one GPU need.
type GPUNeed struct {
	Index    int      `json:"index"`
	Services []string `json:"services"`
	VRAMMB   Amount   `json:"vram_mb"`
}

// Port is one port the machine listens on, directly or through a service.
type Port struct {
	Port  int    `json:"port"`
	Owner string `json:"owner"`
	Free  *bool  `json:"free"` // nil: not checked
}

// Finding is one warning or refusal, as one sentence.
type Finding struct {
	Refuse  bool   `json:"refuse"`
	Message string `json:"message"`
}

// Report is what the plan needs and what the box has.
type Report struct {
	Services []ServiceNeed `json:"services"`
	GPUs     []GPUNeed     `json:"gpus"`
	RAMMB    Amount        `json:"ram_mb"`
	DiskMB   Amount        `json:"disk_mb"` // still to install
	CPU      Amount        `json:"cpu_cores"`
	Ports    []Port        `json:"ports"`
	Models   []Model       `json:"models,omitempty"`
	Findings []Finding     `json:"findings"`
}

// Refusals counts the findings that make the configuration impossible.
func (r Report) Refusals() int {
	n := 0
	for _, f := range r.Findings {
		if f.Refuse {
			n++
		}
	}
	return n
}

func (r *Report) refuse(format string, args ...any) {
	r.Findings = append(r.Findings, Finding{Refuse: true, Message: fmt.Sprintf(format, args...)})
}

func (r *Report) warn(format string, args ...any) {
	r.Findings = append(r.Findings, Finding{Message: fmt.Sprintf(format, args...)})
}

// have is an amount of the box, to a tenth; nil when unknown.
func have(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	v = math.Round(v*10) / 10
	return &v
}

// andList writes names as "a, b and c".
func andList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

func gb(mb float64) string { return fmt.Sprintf("%.1f GB", mb/1024) }

// Calculate estimates what the plan needs and checks it against the box.
func Calculate(cfg *config.Config, p *plan.Plan, models ModelSet, box Box) Report {
	r := Report{Models: models.Models}
	ram, cpu := float64(machineRAMMB), machineCPU
	comfyVRAM, comfyRAM := comfyModelMemory(models.Models)
	comfy := false
	for _, s := range p.Services {
		n := ServiceNeed{Name: s.Name, Kind: s.Kind, GPU: s.GPU, Port: s.Port}
		switch s.Kind {
		case "comfyui":
			comfy = true
			n.RAMMB, n.CPU = comfyBaseRAMMB+comfyRAM, comfyCPU
			if s.GPU != plan.NoGPU {
				n.VRAMMB = comfyBaseVRAMMB + comfyVRAM
			}
		case "browser":
			tabs := float64(cfg.BrowserTabs)
			n.RAMMB, n.CPU = browserRAMMB+browserTabRAMMB*tabs, browserCPU+browserTabCPU*tabs
		}
		ram, cpu = ram+n.RAMMB, cpu+n.CPU
		r.Services = append(r.Services, n)
	}
	for _, d := range cfg.Services {
		n := ServiceNeed{Name: d.Name, Kind: "extra", GPU: plan.NoGPU, Port: d.Port, RAMMB: d.MemoryLimitMB}
		if d.GPU != nil {
			n.GPU = *d.GPU
		}
		ram += n.RAMMB
		r.Services = append(r.Services, n)
	}
	for _, s := range p.Slots {
		if ct, _ := registry.Lookup(s.Connector); ct.Service == nil && !ct.GPUBound && s.Connector != "mock" {
			ram, cpu = ram+remoteSlotRAMMB, cpu+remoteSlotCPU
		}
	}
	disk := 0.0
	if comfy {
		if !models.ComfyUIInstalled {
			disk += comfyInstallDiskMB
		}
		disk += float64(models.NodesToInstall) * comfyNodeDiskMB
		for _, m := range models.Models {
			if !m.Present {
				disk += m.SizeMB
			}
		}
	}
	r.RAMMB = Amount{Need: math.Round(ram), Have: have(box.RAMMB)}
	r.CPU = Amount{Need: cpu, Have: have(box.CPUCores)}
	r.DiskMB = Amount{Need: math.Round(disk), Have: have(box.DiskFreeMB)}

	r.checkGPUs(box)
	r.checkAmount("RAM", r.RAMMB, true, "run fewer ComfyUI instances or browser tabs, or use a box with more memory")
	r.checkAmount("disk", r.DiskMB, true, "free space where ComfyUI and MACHINE_CACHE_DIR live, or list fewer models")
	r.checkAmount("CPU", r.CPU, false, "expect slower jobs")
	r.checkPorts(cfg, box)
	if comfy && !models.Manifest {
		r.warn("no COMFYUI_MANIFEST: the model set is unknown, so the figures count ComfyUI without models")
	}
	return r
}

// comfyModelMemory sizes what one ComfyUI instance holds at once: the largest diffusion model
// (a checkpoint, or a UNet with its text encoder), and the largest VAE. Models go through RAM on
// their way to the GPU.
func comfyModelMemory(models []Model) (vram, ram float64) {
	largest := map[string]float64{}
	for _, m := range models {
		g := group(m.Dest)
		largest[g] = max(largest[g], m.SizeMB)
	}
	vram = max(largest["checkpoint"], largest["unet"]+largest["text_encoder"]) + largest["vae"]
	return vram, vram
}

// group is what a model is, from its folder under models/.
func group(dest string) string {
	folder := path.Base(path.Dir(path.Clean(dest)))
	switch folder {
	case "checkpoints":
		return "checkpoint"
	case "unet", "diffusion_models":
		return "unet"
	case "clip", "text_encoders":
		return "text_encoder"
	case "vae":
		return "vae"
	}
	return "other"
}

// folderSizesMB are typical sizes of a model by its folder, for manifest entries whose file is
// not on disk yet: SDXL checkpoints, Flux's fp8 UNet and T5 encoder, an SDXL VAE, a LoRA.
var folderSizesMB = map[string]float64{
	"checkpoints": 6.5 * 1024, "unet": 11.5 * 1024, "diffusion_models": 11.5 * 1024,
	"clip": 4.6 * 1024, "text_encoders": 4.6 * 1024, "vae": 320, "loras": 150, "controlnet": 2.4 * 1024,
	"upscale_models": 64, "clip_vision": 1.6 * 1024, "embeddings": 1,
}

// EstimateSizeMB is the typical size of a model stored at dest.
func EstimateSizeMB(dest string) float64 {
	if mb, ok := folderSizesMB[path.Base(path.Dir(path.Clean(dest)))]; ok {
		return mb
	}
	return 2 * 1024
}

func (r *Report) checkGPUs(box Box) {
	byGPU := map[int]*GPUNeed{}
	var order []int
	needsGPU := map[string]bool{}
	for _, s := range r.Services {
		if s.Kind == "comfyui" {
			needsGPU[s.Name] = true
		}
		if s.GPU == plan.NoGPU {
			continue
		}
		g := byGPU[s.GPU]
		if g == nil {
			g = &GPUNeed{Index: s.GPU}
			if s.GPU < len(box.GPUMemoryMB) {
				g.VRAMMB.Have = have(box.GPUMemoryMB[s.GPU])
			}
			byGPU[s.GPU] = g
			order = append(order, s.GPU)
		}
		g.Services = append(g.Services, s.Name)
		g.VRAMMB.Need += s.VRAMMB
	}
	slices.Sort(order)
	for _, i := range order {
		g := byGPU[i]
		r.GPUs = append(r.GPUs, *g)
		if g.VRAMMB.Have == nil {
			if i >= len(box.GPUMemoryMB) {
				r.refuse("%s are planned on GPU %d, which this box does not have (it has %d); lower MACHINE_GPU_COUNT", andList(g.Services), i, len(box.GPUMemoryMB))
			}
			continue
		}
		need, hv := g.VRAMMB.Need, *g.VRAMMB.Have
		switch {
		case need > hv:
			r.refuse("GPU %d has %s of memory but %s need about %s; lower PM2_INSTANCES_PER_GPU, list smaller models, or use a larger GPU",
				i, gb(hv), andList(g.Services), gb(need))
		case need > warnShare*hv:
			r.warn("GPU %d: %s need about %s of its %s, little headroom for larger workflows", i, andList(g.Services), gb(need), gb(hv))
		}
	}
	for _, s := range r.Services {
		if needsGPU[s.Name] && s.GPU == plan.NoGPU {
			r.refuse("%s needs a GPU but this box has none (MACHINE_HAS_GPU=false, or no GPU found); use comfyui-remote, or run it on a GPU box", s.Name)
		}
	}
	if box.Simulated && len(byGPU) > 0 && len(needsGPU) > 0 {
		r.warn("the GPUs are simulated (GPU_MODE=mock, or no NVIDIA driver answers), so ComfyUI would be told to use GPUs this box may not have; run with GPU_MODE=actual on the GPU box")
	}
}

func (r *Report) checkAmount(what string, a Amount, refuse bool, fix string) {
	if a.Have == nil || a.Need == 0 {
		return
	}
	unit := func(v float64) string {
		if what == "CPU" {
			return fmt.Sprintf("%.1f cores", v)
		}
		return gb(v)
	}
	switch {
	case a.Need > *a.Have && refuse:
		r.refuse("the plan needs about %s of %s but the box has %s; %s", unit(a.Need), what, unit(*a.Have), fix)
	case a.Need > *a.Have:
		r.warn("the plan keeps about %s busy but the box has %s; %s", unit(a.Need), unit(*a.Have), fix)
	case a.Need > warnShare**a.Have:
		r.warn("the plan needs about %s of the box's %s of %s, little to spare", unit(a.Need), unit(*a.Have), what)
	}
}

func (r *Report) checkPorts(cfg *config.Config, box Box) {
	owners := map[int][]string{}
	add := func(port int, owner string) {
		if port <= 0 {
			return // any free port
		}
		if len(owners[port]) == 0 {
			r.Ports = append(r.Ports, Port{Port: port, Owner: owner})
		}
		owners[port] = append(owners[port], owner)
	}
	add(cfg.HealthPort, "MACHINE_HEALTH_PORT")
	for _, s := range r.Services {
		add(s.Port, s.Name)
	}
	for i := range r.Ports {
		pt := &r.Ports[i]
		if o := owners[pt.Port]; len(o) > 1 {
			r.refuse("port %d is wanted by both %s; give one of them another port (COMFYUI_BASE_PORT, MACHINE_HEALTH_PORT or the service's port)", pt.Port, andList(o))
			continue
		}
		if pt.Port > 65535 {
			r.refuse("%s would listen on port %d, beyond 65535; lower COMFYUI_BASE_PORT", pt.Owner, pt.Port)
			continue
		}
		if box.PortFree != nil {
			free := box.PortFree(pt.Port)
			pt.Free = &free
			if !free {
				r.warn("port %d (%s) is in use on this box: another program, or this machine already running, listens there", pt.Port, pt.Owner)
			}
		}
	}
	slices.SortFunc(r.Ports, func(a, b Port) int { return a.Port - b.Port })
}
