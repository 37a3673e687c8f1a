package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/connectors/registry"
	"github.com/emp-job-queue/machine/core/plan"
)

func newInstallCmd() *cobra.Command {
	var layers layerFlags
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install what the configured connectors' services need (ComfyUI with its nodes and models, Chromium)",
		Long: `install runs the installers for the services the configuration implies (see machine plan):
ComfyUI from COMFYUI_REPO_URL with the custom nodes and models of COMFYUI_MANIFEST, and Chromium.
Finished steps leave markers, so running it again (or at boot) only does what is missing.
Use it to bake an image or to prepare a box before its first start.
With --layer it installs the named layers whatever the connectors (the Dockerfile's stages).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if layers.set() {
				ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
				defer stop()
				return layers.install(ctx, cmd.OutOrStdout(), newLogger(cmd.ErrOrStderr(), !isTerminal(os.Stdout), "info"))
			}
			cfg, p, problems := loadPlan()
			if problems != nil {
				return problems
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			log := newLogger(cmd.ErrOrStderr(), !isTerminal(os.Stdout), cfg.LogLevel)
			return install(ctx, cfg, p, log, cmd.OutOrStdout())
		},
	}
	layers.register(cmd)
	return cmd
}

// install runs the installer of every service kind the plan needs, once each.
func install(ctx context.Context, cfg *config.Config, p *plan.Plan, log *slog.Logger, out io.Writer) error {
	var kinds []string
	for _, s := range p.Services {
		if !slices.Contains(kinds, s.Kind) {
			kinds = append(kinds, s.Kind)
		}
	}
	if len(kinds) == 0 {
		fmt.Fprintln(out, "nothing to install: the configured connectors need no internal services")
		return nil
	}
	for _, k := range kinds {
		kind, ok := registry.ServiceKind(k)
		if !ok {
			return fmt.Errorf("no connector of this build installs a %s service", k)
		}
		if _, err := kind.Install(ctx, connectors.InstallEnv{Config: cfg, Log: log}); err != nil {
			return err
		}
		fmt.Fprintf(out, "%s installed\n", k)
	}
	return nil
}
