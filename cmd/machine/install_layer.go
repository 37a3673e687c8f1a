package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/installers/layer"
)

// layerFlags are `machine install --layer …`: one image layer, whatever the connectors.
type layerFlags struct {
	layers   string
	allowApt bool
	from     string
	sha256   string
}

func (f *layerFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.layers, "layer", "", "install these layers whatever the connectors: comfyui, browser, p5 (comma-separated); what the Dockerfile runs")
	fl.BoolVar(&f.allowApt, "apt", false, "install missing Debian packages with apt-get (needs root)")
	fl.StringVar(&f.from, "from", "", "p5: URL or path of p5's npm package (p5-X.tgz) or of p5.min.js")
	fl.StringVar(&f.sha256, "sha256", "", "p5: sha256 of the --from file")
}

func (f *layerFlags) set() bool { return f.layers != "" }

// installLayers installs each named layer in turn, printing one line per layer.
func (f *layerFlags) install(ctx context.Context, out io.Writer, log *slog.Logger) error {
	names, err := layer.Parse(f.layers)
	if err != nil {
		return err
	}
	cfg, err := config.FromEnv()
	if err != nil {
		return err
	}
	for _, n := range names {
		line, err := layer.Install(ctx, n, layer.Options{Config: cfg, AllowApt: f.allowApt, From: f.from, SHA256: f.sha256, Log: log})
		if err != nil {
			return err
		}
		fmt.Fprintln(out, line)
	}
	return nil
}
