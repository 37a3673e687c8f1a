package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/machine"
	"github.com/emp-job-queue/machine/core/plan"
	"github.com/emp-job-queue/machine/installers/browser"
	"github.com/emp-job-queue/machine/installers/comfyui"
	"github.com/emp-job-queue/machine/installers/layer"
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
			cfg, p, err := loadPlan()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			log := newLogger(cmd.ErrOrStderr(), !isTerminal(os.Stdout), cfg.LogLevel)
			return install(ctx, cfg, p, log, cmd)
		},
	}
	layers.register(cmd)
	return cmd
}

func install(ctx context.Context, cfg *config.Config, p *plan.Plan, log *slog.Logger, cmd *cobra.Command) error {
	kinds := map[string]bool{}
	for _, s := range p.Services {
		kinds[s.Kind] = true
	}
	if len(kinds) == 0 {
		fmt.Fprintln(cmd.OutOrStdout(), "nothing to install: the configured connectors need no internal services")
		return nil
	}
	runner := layer.Runner(cfg, log)
	if kinds["comfyui"] {
		in := layer.ComfyUIInstall(cfg)
		if cfg.ComfyUI.Manifest != "" {
			m, err := comfyui.LoadManifest(cfg.ComfyUI.Manifest)
			if err != nil {
				return err
			}
			in.Manifest = m
		}
		if err := runner.Run(ctx, in.Stages()...); err != nil {
			return fmt.Errorf("ComfyUI install: %w", err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "ComfyUI installed in %s\n", cfg.ComfyUI.Dir)
	}
	if kinds["browser"] {
		b, err := browser.Find(ctx, cfg.BrowserInstall == "apt")
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "Chromium %s at %s\n", b.Version, b.Path)
	}
	if bin, err := machine.InstallDaemons(ctx, cfg, p.Services, log); err != nil { // ollama, a1111
		return err
	} else if bin != "" {
		fmt.Fprintf(cmd.OutOrStdout(), "Ollama at %s, models %v\n", bin, cfg.Ollama.Models)
	}
	if kinds["a1111"] {
		fmt.Fprintf(cmd.OutOrStdout(), "A1111 installed in %s\n", cfg.A1111.Dir)
	}
	return nil
}
