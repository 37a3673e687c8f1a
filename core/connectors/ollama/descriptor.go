package ollama

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/supervisor"
	"github.com/emp-job-queue/machine/installers"
	ollamainstall "github.com/emp-job-queue/machine/installers/ollama"
)

// Descriptor is the ollama connector: text, chat and embedding jobs on one Ollama daemon that
// the machine installs (with the models of OLLAMA_DEFAULT_MODELS) and supervises, shared by
// every slot and seeing every GPU. An "auto" count gives one slot per GPU, as the old runtime's
// daemon clients scaled.
var Descriptor = connectors.Descriptor{
	Name: "ollama", JobServices: []string{"ollama", "text_generation", "chat_completion", "embeddings"},
	StatusServices: []string{"ollama"}, AutoPerGPU: true,
	Service: &connectors.ServiceKind{
		Kind: "ollama", Install: install,
		BasePort: func(c *config.Config) int { return c.Ollama.BasePort },
	},
	New: func(env connectors.Env) connectors.Connector {
		c := env.Config.Ollama
		return New(Settings{BaseURL: env.ServiceURL, DefaultModel: c.DefaultModel, Timeout: c.Timeout, Assets: env.Assets})
	},
}

// Installation is the Ollama the configuration describes, its daemon on port.
func Installation(c *config.Config, port int, log *slog.Logger) ollamainstall.Install {
	o := c.Ollama
	in := ollamainstall.Install{Binary: o.Binary, Workspace: c.Workspace, Port: port, ModelsDir: o.ModelsDir,
		Models: o.Models, PullTimeout: o.PullTimeout, Env: o.DaemonEnv, Log: log}
	if o.Install == "script" {
		in.ScriptURL = o.InstallURL
	}
	return in
}

// install finds (or, with OLLAMA_INSTALL=script, installs) Ollama and pulls its models. A
// model that fails to pull leaves the rest running, unless MACHINE_INSTALL_STRICT is set.
func install(ctx context.Context, env connectors.InstallEnv) (connectors.SpecFunc, error) {
	c := env.Config
	in := Installation(c, c.Ollama.BasePort, env.Log)
	env.Log.Info("installing Ollama and its models (steps already done are skipped)", "models", c.Ollama.Models)
	bin, err := in.Run(ctx, env.Runner())
	var partial *installers.StepError
	switch {
	case bin == "" || (err != nil && (c.InstallStrict || !errors.As(err, &partial) || ctx.Err() != nil)):
		return nil, fmt.Errorf("ollama install: %w", err)
	case err != nil:
		env.Log.Error("some Ollama models did not pull; jobs for them fail until they are pulled", "err", err)
	}
	return func(i connectors.Instance) supervisor.Spec {
		return ollamainstall.ServiceSpec(bin, Installation(c, i.Port, env.Log), i.Name, i.Port, i.Slots)
	}, nil
}
