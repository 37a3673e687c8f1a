// Package catalog lists the connector types a machine can be configured with: which job
// services (the broker's service_required values) each one accepts, whether it is bound to a
// GPU, and which internal service, if any, it needs the machine to install and supervise.
//
// It is the Go counterpart of the old runtime's service-mapping.json (emp-reference §7.2).
package catalog

import (
	"slices"
	"sort"
)

// Service describes an internal service a connector needs on the machine.
type Service struct {
	Name     string // base name, e.g. "comfyui"; instances are named per GPU ("comfyui-gpu0")
	BasePort int    // port of the first instance; instance n listens on BasePort+n
	PerGPU   bool   // one instance per GPU (and per PM2_INSTANCES_PER_GPU), else one shared instance
}

// Connector describes one connector type.
type Connector struct {
	Name string
	// JobServices are the service_required values the connector accepts. They are sent as both
	// `services` and `job_service_required_map` in the claim capabilities (PROTOCOL §2).
	JobServices []string
	// GPUBound connectors get one slot per GPU instance by default and are pinned to a GPU.
	GPUBound bool
	// Service is the internal service the connector talks to, nil for in-process or remote APIs.
	Service *Service
	// StatusServices are the names shown to the monitor in machine:status
	// structure.workers[].services (the old runtime's internal service names).
	StatusServices []string
	// AutoPerGPU gives a connector that is not pinned to a GPU one slot per GPU (at least one)
	// for an "auto" count: the old runtime's daemon clients (Ollama) scaled with the GPUs.
	AutoPerGPU bool
}

var connectors = map[string]Connector{
	"comfyui": {
		Name: "comfyui", JobServices: []string{"comfyui"}, GPUBound: true,
		Service:        &Service{Name: "comfyui", BasePort: 8188, PerGPU: true},
		StatusServices: []string{"comfyui"},
	},
	"comfyui-remote": {
		Name: "comfyui-remote", JobServices: []string{"comfyui"},
		StatusServices: []string{"comfyui-remote"},
	},
	"openai": {
		Name:           "openai",
		JobServices:    []string{"openai_text", "openai_image", "openai_img2img", "openai_responses"},
		StatusServices: []string{"openai-text", "openai-image", "openai-img2img", "openai-responses"},
	},
	"replicate": {
		Name: "replicate", JobServices: []string{"replicate"}, StatusServices: []string{"replicate"},
	},
	"runpod": {
		Name: "runpod", JobServices: []string{"runpod"}, StatusServices: []string{"runpod"},
	},
	"playwright": {
		Name: "playwright", JobServices: []string{"playwright"},
		Service:        &Service{Name: "browser", BasePort: 9222},
		StatusServices: []string{"playwright"},
	},
	"simulation": {
		Name: "simulation", JobServices: []string{"simulation"}, GPUBound: true,
		StatusServices: []string{"simulation"},
	},
	"mock": {
		Name: "mock", JobServices: []string{"mock"}, StatusServices: []string{"mock_test"},
	},
	"ollama": {
		Name: "ollama", JobServices: []string{"ollama", "text_generation", "chat_completion", "embeddings"},
		Service: &Service{Name: "ollama", BasePort: 11434}, StatusServices: []string{"ollama"}, AutoPerGPU: true,
	},
	"gemini": {
		Name: "gemini", JobServices: []string{"gem-nano-banana"}, StatusServices: []string{"gem-nano-banana"},
	},
	"a1111": {
		Name: "a1111", JobServices: []string{"a1111"}, GPUBound: true,
		Service: &Service{Name: "a1111", BasePort: 7860, PerGPU: true}, StatusServices: []string{"a1111"},
	},
}

// Lookup returns the connector type with the given name.
func Lookup(name string) (Connector, bool) {
	c, ok := connectors[name]
	if ok {
		c.JobServices = slices.Clone(c.JobServices)
		c.StatusServices = slices.Clone(c.StatusServices)
	}
	return c, ok
}

// Names returns every known connector type, sorted.
func Names() []string {
	names := make([]string, 0, len(connectors))
	for n := range connectors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
