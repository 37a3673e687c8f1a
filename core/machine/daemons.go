package machine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"

	"github.com/emp-job-queue/machine/core/config"
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

// installRunner runs install stages with the configuration's markers, limits and logging;
// progress is logged every 10 % of a step.
func installRunner(cfg *config.Config, log *slog.Logger) *installers.Runner {
	var mu sync.Mutex
	logged := map[string]int64{}
	return &installers.Runner{MarkerDir: filepath.Join(cfg.CacheDir, "markers"), Parallel: 4,
		Timeout: cfg.InstallTimeout, Strict: cfg.InstallStrict, Log: log,
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
			log.Info("install step progress", "step", ev.Step, "done", ev.Done, "total", ev.Total, "percent", tenth*10)
		}}
}

// ollamaInstall is the Ollama the configuration describes, for the service on port.
func ollamaInstall(cfg *config.Config, port int, log *slog.Logger) ollamainstall.Install {
	o := cfg.Ollama
	in := ollamainstall.Install{Binary: o.Binary, Workspace: cfg.Workspace, Port: port, ModelsDir: o.ModelsDir,
		Models: o.Models, PullTimeout: o.PullTimeout, Env: o.DaemonEnv, Log: log}
	if o.Install == "script" {
		in.ScriptURL = o.InstallURL
	}
	return in
}

// a1111Install is the AUTOMATIC1111 installation the configuration describes.
func a1111Install(cfg *config.Config) a1111install.Install {
	a := cfg.A1111
	return a1111install.Install{Dir: a.Dir, RepoURL: a.RepoURL, Branch: a.Branch, Commit: a.Commit}
}

// InstallDaemons installs, for the planned services that need them, the Ollama daemon (and
// pulls its models) and A1111, and returns the Ollama binary ("" when no Ollama is planned). A
// model that fails to pull leaves the rest running, unless MACHINE_INSTALL_STRICT is set.
// `machine install` and the machine's start both call it.
func InstallDaemons(ctx context.Context, cfg *config.Config, services []plan.Service, log *slog.Logger) (string, error) {
	var bin string
	if i := slices.IndexFunc(services, func(s plan.Service) bool { return s.Kind == "ollama" }); i >= 0 {
		log.Info("installing Ollama and its models (steps already done are skipped)", "models", cfg.Ollama.Models)
		b, err := ollamaInstall(cfg, services[i].Port, log).Run(ctx, installRunner(cfg, log))
		var partial *installers.StepError
		switch {
		case b == "" || (err != nil && (cfg.InstallStrict || !errors.As(err, &partial) || ctx.Err() != nil)):
			return "", fmt.Errorf("ollama install: %w", err)
		case err != nil:
			log.Error("some Ollama models did not pull; jobs for them fail until they are pulled", "err", err)
		}
		bin = b
	}
	if slices.ContainsFunc(services, func(s plan.Service) bool { return s.Kind == "a1111" }) {
		in := a1111Install(cfg)
		log.Info("installing AUTOMATIC1111 (steps already done are skipped)", "dir", in.Dir, "commit", in.Commit)
		if err := installRunner(cfg, log).Run(ctx, in.Stages()...); err != nil {
			return bin, fmt.Errorf("A1111 install: %w", err)
		}
	}
	return bin, nil
}

// installDaemons runs InstallDaemons for the machine and keeps the Ollama binary it found.
func (m *Machine) installDaemons(ctx context.Context, services []plan.Service) error {
	bin, err := InstallDaemons(ctx, m.cfg, services, m.log)
	if bin != "" {
		m.daemons.mu.Lock()
		m.daemons.ollamaBin = bin
		m.daemons.mu.Unlock()
	}
	return err
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
		return ollamainstall.ServiceSpec(bin, ollamaInstall(m.cfg, svc.Port, m.log), svc), true, nil
	case "a1111":
		return a1111install.ServiceSpec(a1111Install(m.cfg), svc, m.cfg.A1111.Args, m.cfg.A1111.CkptDir), true, nil
	}
	return spec, false, nil
}
