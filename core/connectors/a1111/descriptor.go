package a1111

import (
	"context"
	"fmt"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/supervisor"
	a1111install "github.com/emp-job-queue/machine/installers/a1111"
)

// Descriptor is the a1111 connector: one AUTOMATIC1111 WebUI (API only) per GPU, installed at
// a pinned commit and supervised by the machine, one slot per instance.
var Descriptor = connectors.Descriptor{
	Name: "a1111", JobServices: []string{"a1111"}, StatusServices: []string{"a1111"}, GPUBound: true,
	Service: &connectors.ServiceKind{
		Kind: "a1111", PerGPU: true, Install: install,
		BasePort: func(c *config.Config) int { return c.A1111.BasePort },
	},
	New: func(env connectors.Env) connectors.Connector {
		return New(Settings{BaseURL: env.ServiceURL, Timeout: env.Config.A1111.Timeout, Assets: env.Assets})
	},
}

// Installation is the AUTOMATIC1111 installation the configuration describes.
func Installation(c *config.Config) a1111install.Install {
	a := c.A1111
	return a1111install.Install{Dir: a.Dir, RepoURL: a.RepoURL, Branch: a.Branch, Commit: a.Commit}
}

// install checks out A1111 at A1111_COMMIT_HASH and prepares its environment, within
// SERVICE_INSTALL_TIMEOUT.
func install(ctx context.Context, env connectors.InstallEnv) (connectors.SpecFunc, error) {
	c := env.Config
	in := Installation(c)
	env.Log.Info("installing AUTOMATIC1111 (steps already done are skipped)", "dir", in.Dir, "commit", in.Commit)
	if err := env.Runner().Run(ctx, in.Stages()...); err != nil {
		return nil, fmt.Errorf("A1111 install: %w", err)
	}
	return func(i connectors.Instance) supervisor.Spec {
		return a1111install.ServiceSpec(in, i.Name, i.Port, i.GPU, c.A1111.Args, c.A1111.CkptDir)
	}, nil
}
