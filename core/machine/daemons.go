package machine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/emp-job-queue/machine/core/plan"
	"github.com/emp-job-queue/machine/core/supervisor"
	"github.com/emp-job-queue/machine/installers"
	a1111install "github.com/emp-job-queue/machine/installers/a1111"
	ollamainstall "github.com/emp-job-queue/machine/installers/ollama"
)

// daemons holds what the installs of the old runtime's other services found: the Ollama
// binary. (ComfyUI and the browser are wired in machine.go.)
type daemons struct {
	mu        sync.Mutex
	ollamaBin string
}

// installRunner runs install stages with the machine's markers, limits and logging; progress
// is logged every 10 % of a step.
func (m *Machine) installRunner() *installers.Runner {
	var mu sync.Mutex
	logged := map[string]int64{}
	return &installers.Runner{MarkerDir: filepath.Join(m.cfg.CacheDir, "markers"), Parallel: 4,
		Timeout: m.cfg.InstallTimeout, Strict: m.cfg.InstallStrict, Log: m.log,
		OnEvent: func(ev installers.Event) {
			if ev.Phase != installers.Progress || ev.Total <= 0 {
				return
			}
			tenth := ev.Done * 10 / ev.Total
			mu.Lock()
			defer mu.Unlock()
			if last, seen := logged[ev.Step]; seen && tenth <= last {
				return
			}
			logged[ev.Step] = tenth
			m.log.Info("install step progress", "step", ev.Step, "done", ev.Done, "total", ev.Total, "percent", tenth*10)
		}}
}

// ollamaInstall is the Ollama the configuration describes, for the service on port.
func (m *Machine) ollamaInstall(port int) ollamainstall.Install {
	o := m.cfg.Ollama
	in := ollamainstall.Install{Binary: o.Binary, Workspace: m.cfg.Workspace, Port: port, ModelsDir: o.ModelsDir,
		Models: o.Models, PullTimeout: o.PullTimeout, Env: o.DaemonEnv, Log: m.log}
	if o.Install == "script" {
		in.ScriptURL = o.InstallURL
	}
	return in
}

// a1111Install is the AUTOMATIC1111 installation the configuration describes.
func (m *Machine) a1111Install() a1111install.Install {
	a := m.cfg.A1111
	return a1111install.Install{Dir: a.Dir, RepoURL: a.RepoURL, Branch: a.Branch, Commit: a.Commit}
}

// installDaemons installs the Ollama daemon (and pulls its models) and A1111 when planned
// services need them. A model or an A1111 extra that fails leaves the rest running, unless
// MACHINE_INSTALL_STRICT is set.
func (m *Machine) installDaemons(ctx context.Context, services []plan.Service) error {
	for _, svc := range services {
		if svc.Kind != "ollama" {
			continue
		}
		m.log.Info("installing Ollama and its models (steps already done are skipped)", "models", m.cfg.Ollama.Models)
		bin, err := m.ollamaInstall(svc.Port).Run(ctx, m.installRunner())
		if bin == "" {
			return fmt.Errorf("ollama install: %w", err)
		}
		m.daemons.mu.Lock()
		m.daemons.ollamaBin = bin
		m.daemons.mu.Unlock()
		var partial *installers.StepError
		if err != nil && (m.cfg.InstallStrict || !errors.As(err, &partial) || ctx.Err() != nil) {
			return fmt.Errorf("ollama install: %w", err)
		}
		if err != nil {
			m.log.Error("some Ollama models did not pull; jobs for them fail until they are pulled", "err", err)
		}
		break
	}
	for _, svc := range services {
		if svc.Kind != "a1111" {
			continue
		}
		in := m.a1111Install()
		m.log.Info("installing AUTOMATIC1111 (steps already done are skipped)", "dir", in.Dir, "commit", in.Commit)
		if err := m.installRunner().Run(ctx, in.Stages()...); err != nil {
			return fmt.Errorf("A1111 install: %w", err)
		}
		break
	}
	return nil
}

// daemonSpec is how the supervisor runs an Ollama or A1111 service; ok is false for others.
func (m *Machine) daemonSpec(svc plan.Service) (spec supervisor.Spec, ok bool, err error) {
	switch svc.Kind {
	case "ollama":
		m.daemons.mu.Lock()
		bin := m.daemons.ollamaBin
		m.daemons.mu.Unlock()
		if bin == "" {
			return spec, true, fmt.Errorf("service %s: Ollama was not installed before it was started", svc.Name)
		}
		return ollamainstall.ServiceSpec(bin, m.ollamaInstall(svc.Port), svc), true, nil
	case "a1111":
		return a1111install.ServiceSpec(m.a1111Install(), svc, m.cfg.A1111.Args, m.cfg.A1111.CkptDir), true, nil
	}
	return spec, false, nil
}
