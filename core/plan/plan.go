// Package plan derives from a configuration what the machine runs: its worker slots, the GPU
// each is bound to, and the internal services (with their ports) the slots depend on. It is the
// replacement for the old runtime's PM2 ecosystem generator, as a pure function.
package plan

import (
	"fmt"
	"strings"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/connectors/registry"
)

// NoGPU is the GPU index of a slot or service that is not bound to a GPU.
const NoGPU = -1

// Plan is what a configuration implies.
type Plan struct {
	MachineID string    `json:"machine_id"`
	GPUCount  int       `json:"gpu_count"`
	Slots     []Slot    `json:"slots"`
	Services  []Service `json:"services"`
}

// Slot is one worker slot: it claims and runs one job at a time through its connector.
type Slot struct {
	ID          string   `json:"id"` // ${MACHINE_ID}-worker-${connector}-${index}
	Connector   string   `json:"connector"`
	Index       int      `json:"index"`
	GPU         int      `json:"gpu"`               // NoGPU when not bound
	Service     string   `json:"service,omitempty"` // internal service instance it needs
	JobServices []string `json:"job_services"`      // service_required values it claims
	StatusNames []string `json:"status_services"`   // names shown in machine:status
	Binding     string   `json:"resource_binding"`  // "gpu", "cpu" or "shared", as the monitor shows it
}

// Service is one instance of an internal service the machine installs and supervises.
type Service struct {
	Name      string   `json:"name"` // e.g. comfyui-gpu0
	Kind      string   `json:"kind"` // the connector's service kind, e.g. comfyui
	GPU       int      `json:"gpu"`
	Port      int      `json:"port"`
	Connector string   `json:"connector"`
	Slots     []string `json:"slots"`
}

// New builds the plan for a validated configuration.
func New(cfg *config.Config) (*Plan, error) {
	p := &Plan{MachineID: cfg.MachineID, GPUCount: cfg.GPUCount}
	capacity := cfg.GPUCount * cfg.InstancesPerGPU
	var problems config.Problems
	shared := map[string]int{} // service kind -> index in p.Services

	for _, want := range cfg.Connectors {
		ct, ok := registry.Lookup(want.Name)
		if !ok {
			problems = append(problems, fmt.Sprintf("WORKER_CONNECTORS names unknown connector %q; known connectors: %s",
				want.Name, strings.Join(registry.Names(), ", ")))
			continue
		}
		count := want.Count
		if want.Auto {
			count = 1
			if ct.GPUBound && capacity > 0 {
				count = capacity
			}
			if ct.AutoPerGPU {
				count = max(1, cfg.GPUCount)
			}
		}
		if ct.GPUBound && capacity > 0 && count > capacity {
			problems = append(problems, fmt.Sprintf(
				"WORKER_CONNECTORS asks for %d %s slots but the machine has %d GPU(s) × %d instance(s); lower the count or raise PM2_INSTANCES_PER_GPU",
				count, want.Name, cfg.GPUCount, cfg.InstancesPerGPU))
			continue
		}
		for i := 0; i < count; i++ {
			s := Slot{
				ID:          fmt.Sprintf("%s-worker-%s-%d", cfg.MachineID, want.Name, i),
				Connector:   want.Name,
				Index:       i,
				GPU:         NoGPU,
				JobServices: ct.JobServices,
				StatusNames: ct.StatusServices,
				Binding:     "shared",
			}
			if ct.GPUBound {
				s.Binding = "cpu"
				if capacity > 0 {
					s.GPU = i / cfg.InstancesPerGPU
					s.Binding = "gpu"
				}
			}
			if ct.Service != nil {
				s.Service = p.addService(cfg, ct, s, shared)
			}
			p.Slots = append(p.Slots, s)
		}
	}
	if len(problems) > 0 {
		return nil, problems
	}
	return p, nil
}

func (p *Plan) addService(cfg *config.Config, ct connectors.Descriptor, s Slot, shared map[string]int) string {
	svc := ct.Service
	base := svc.BasePort(cfg)
	if !svc.PerGPU {
		if i, ok := shared[svc.Kind]; ok {
			p.Services[i].Slots = append(p.Services[i].Slots, s.ID)
			return p.Services[i].Name
		}
		shared[svc.Kind] = len(p.Services)
		p.Services = append(p.Services, Service{
			Name: svc.Kind, Kind: svc.Kind, GPU: NoGPU, Port: base, Connector: ct.Name, Slots: []string{s.ID},
		})
		return svc.Kind
	}
	name := fmt.Sprintf("%s-cpu%d", svc.Kind, s.Index)
	if s.GPU != NoGPU {
		name = fmt.Sprintf("%s-gpu%d", svc.Kind, s.GPU)
		if cfg.InstancesPerGPU > 1 {
			name = fmt.Sprintf("%s-gpu%d-%d", svc.Kind, s.GPU, s.Index%cfg.InstancesPerGPU)
		}
	}
	p.Services = append(p.Services, Service{
		Name: name, Kind: svc.Kind, GPU: s.GPU, Port: base + s.Index, Connector: ct.Name, Slots: []string{s.ID},
	})
	return name
}

// Instance is how a planned service is described to its installer's spec.
func (s Service) Instance() connectors.Instance {
	return connectors.Instance{Name: s.Name, Port: s.Port, GPU: s.GPU, Slots: len(s.Slots)}
}

// SlotsFor returns the slots that run the given connector.
func (p *Plan) SlotsFor(connector string) []Slot {
	var out []Slot
	for _, s := range p.Slots {
		if s.Connector == connector {
			out = append(out, s)
		}
	}
	return out
}

// Service returns the planned service with the given name, nil for "" or an unknown name.
func (p *Plan) Service(name string) *Service {
	for i := range p.Services {
		if p.Services[i].Name == name {
			return &p.Services[i]
		}
	}
	return nil
}
