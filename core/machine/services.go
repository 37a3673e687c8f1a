package machine

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/connectors/registry"
	"github.com/emp-job-queue/machine/core/plan"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/core/supervisor"
)

// services installs the services the connectors need and hands their instances to the
// supervisor, which runs them next to those declared in MACHINE_SERVICES_FILE.
type services struct {
	cfg   *config.Config // immutable
	log   *slog.Logger
	sup   *supervisor.Supervisor
	store *state.Store

	mu    sync.Mutex
	specs map[string]connectors.SpecFunc // installed service kinds: how to run an instance
}

// install runs the installer of each kind among svcs not installed yet (idempotent: a second
// boot skips what is done).
func (s *services) install(ctx context.Context, svcs []plan.Service) error {
	for _, svc := range svcs {
		s.mu.Lock()
		done := s.specs[svc.Kind] != nil
		s.mu.Unlock()
		if done {
			continue
		}
		kind, ok := registry.ServiceKind(svc.Kind)
		if !ok {
			return fmt.Errorf("service %s: no connector of this build installs a %s service", svc.Name, svc.Kind)
		}
		spec, err := kind.Install(ctx, connectors.InstallEnv{Config: s.cfg, Log: s.log})
		if err != nil {
			return fmt.Errorf("install %s: %w", svc.Kind, err)
		}
		s.mu.Lock()
		s.specs[svc.Kind] = spec
		s.mu.Unlock()
	}
	return nil
}

// start hands installed services to the supervisor; on an error none of them stays.
func (s *services) start(svcs []plan.Service) error {
	for i, svc := range svcs {
		s.mu.Lock()
		spec := s.specs[svc.Kind]
		s.mu.Unlock()
		err := fmt.Errorf("service %s (%s) is not installed", svc.Name, svc.Kind)
		if spec != nil {
			err = s.sup.Add(spec(svc.Instance()))
		}
		if err != nil {
			s.stop(svcs[:i])
			return fmt.Errorf("start %s: %w", svc.Name, err)
		}
	}
	return nil
}

// stop stops services for good and forgets them.
func (s *services) stop(svcs []plan.Service) {
	for _, svc := range svcs {
		if err := s.sup.Remove(svc.Name); err != nil {
			s.log.Warn("service not removed", "service", svc.Name, "err", err)
		}
		s.store.RemoveService(svc.Name)
	}
}

// declaredSpecs are the services of MACHINE_SERVICES_FILE, as the supervisor runs them.
func declaredSpecs(cfg *config.Config) []supervisor.Spec {
	var specs []supervisor.Spec
	for _, d := range cfg.Services {
		gpuIndex := plan.NoGPU
		if d.GPU != nil {
			gpuIndex = *d.GPU
		}
		spec := supervisor.Spec{
			Name: d.Name, Command: d.Command, Dir: d.Dir, Port: d.Port, GPU: gpuIndex,
			Probe:         supervisor.Probe{Kind: d.Probe.Kind, Target: d.Probe.Target, Cmd: d.Probe.Command},
			MemoryLimitMB: d.MemoryLimitMB, StopGrace: time.Duration(d.StopGraceS * float64(time.Second)),
		}
		if d.Port > 0 {
			spec.Env = append(spec.Env, fmt.Sprintf("PORT=%d", d.Port))
		}
		if gpuIndex != plan.NoGPU {
			spec.Env = append(spec.Env, fmt.Sprintf("CUDA_VISIBLE_DEVICES=%d", gpuIndex))
		}
		for _, k := range slices.Sorted(maps.Keys(d.Env)) { // sorted: the spec's hash must not change between runs
			spec.Env = append(spec.Env, k+"="+d.Env[k])
		}
		specs = append(specs, spec)
	}
	return specs
}

// newSupervisor builds the supervisor: it starts with the declared services; the connectors'
// own services join as the reconciler installs them.
func (m *Machine) newSupervisor() (*supervisor.Supervisor, error) {
	return supervisor.New(supervisor.Params{
		Specs: declaredSpecs(m.cfg), RunDir: m.cfg.RunDir, LogDir: m.cfg.LogDir, Log: m.log, KeepOnExit: m.cfg.KeepServices,
		OnChange: func(st supervisor.Status) { m.store.SetService(serviceReading(st)) },
		Busy: func(service string) bool {
			snap := m.store.Snapshot()
			for _, sl := range m.layout().plan.Slots {
				if sl.Service == service {
					if live, ok := snap.Slot(sl.ID); ok && live.JobID != "" {
						return true
					}
				}
			}
			return false
		},
	})
}
