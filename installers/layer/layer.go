// Package layer installs one service layer of the machine's image — ComfyUI, the browser,
// p5.js — from the machine's configuration. `machine install --layer` runs it while an image
// is built (see the Dockerfile) and on a bare box, with the same installers the machine uses
// at boot, so both paths run the same tested code.
package layer

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/installers"
	"github.com/emp-job-queue/machine/installers/browser"
	"github.com/emp-job-queue/machine/installers/comfyui"
)

// Name is a layer.
type Name string

// The layers, in the order an image installs them.
const (
	ComfyUI Name = "comfyui" // git, Python, the venv, ComfyUI at COMFYUI_COMMIT, COMFYUI_MANIFEST's nodes and models
	Browser Name = "browser" // Debian's Chromium and fonts
	P5      Name = "p5"      // p5.min.js at PLAYWRIGHT_P5_JS
)

// Names lists every layer.
func Names() []Name { return []Name{ComfyUI, Browser, P5} }

// Packages are the Debian packages each layer needs. ComfyUI's custom nodes often load
// OpenCV, which needs libgl1 and libglib2.0-0.
var Packages = map[Name][]string{
	ComfyUI: {"ca-certificates", "git", "python3", "python3-venv", "libgl1", "libglib2.0-0"},
	Browser: {"chromium", "fonts-liberation", "fonts-dejavu-core"},
}

// Parse reads a comma-separated list of layers.
func Parse(list string) ([]Name, error) {
	var out []Name
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		known := false
		for _, n := range Names() {
			if Name(s) == n {
				known = true
			}
		}
		if !known {
			return nil, fmt.Errorf("unknown layer %q; the layers are %s", s, joinNames(Names()))
		}
		out = append(out, Name(s))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--layer names no layer; give one or more of %s", joinNames(Names()))
	}
	return out, nil
}

func joinNames(ns []Name) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = string(n)
	}
	return strings.Join(s, ", ")
}

// Options say how to install.
type Options struct {
	Config   *config.Config
	AllowApt bool   // install missing Debian packages with apt-get (root)
	From     string // p5: URL or path of p5's npm package or p5.min.js
	SHA256   string // p5: the source's checksum
	Log      *slog.Logger
	OnEvent  func(installers.Event)
}

// Install installs one layer and returns one line saying what is in place.
func Install(ctx context.Context, name Name, o Options) (string, error) {
	cfg := o.Config
	if pkgs := Packages[name]; len(pkgs) > 0 {
		if err := installers.EnsurePackages(ctx, pkgs, o.AllowApt); err != nil {
			return "", fmt.Errorf("%s layer: %w", name, err)
		}
	}
	switch name {
	case ComfyUI:
		in := ComfyUIInstall(cfg)
		if cfg.ComfyUI.Manifest != "" {
			m, err := comfyui.LoadManifest(cfg.ComfyUI.Manifest)
			if err != nil {
				return "", err
			}
			in.Manifest = m
		}
		runner := Runner(cfg, o.Log)
		runner.OnEvent = o.OnEvent
		if err := runner.Run(ctx, in.Stages()...); err != nil {
			return "", fmt.Errorf("comfyui layer: %w", err)
		}
		at := cfg.ComfyUI.Commit
		if at == "" {
			at = "branch " + cfg.ComfyUI.Branch
		}
		return fmt.Sprintf("ComfyUI (%s) installed in %s", at, cfg.ComfyUI.Dir), nil
	case Browser:
		b, err := browser.Find(ctx, false)
		if err != nil {
			return "", fmt.Errorf("browser layer: %w", err)
		}
		return fmt.Sprintf("Chromium %s at %s", b.Version, b.Path), nil
	case P5:
		if cfg.P5JS == "" {
			return "", fmt.Errorf("p5 layer: PLAYWRIGHT_P5_JS is unset; set it to where p5.min.js should go, e.g. /opt/machine/p5/p5.min.js")
		}
		if err := browser.InstallP5(ctx, Downloader(cfg), o.From, o.SHA256, cfg.P5JS); err != nil {
			return "", fmt.Errorf("p5 layer: %w", err)
		}
		return "p5.js at " + cfg.P5JS, nil
	}
	return "", fmt.Errorf("unknown layer %q; the layers are %s", name, joinNames(Names()))
}

// ComfyUIInstall is the ComfyUI installation the configuration describes.
func ComfyUIInstall(cfg *config.Config) comfyui.Install {
	return comfyui.Install{
		Dir: cfg.ComfyUI.Dir, RepoURL: cfg.ComfyUI.RepoURL, Branch: cfg.ComfyUI.Branch, Commit: cfg.ComfyUI.Commit,
		Download: Downloader(cfg),
	}
}

// Downloader is the shared download cache under MACHINE_CACHE_DIR.
func Downloader(cfg *config.Config) *installers.Downloader {
	return &installers.Downloader{Cache: filepath.Join(cfg.CacheDir, "downloads"), AllowUnverified: cfg.AllowUnverifiedDownloads}
}

// Runner runs install steps with their markers under MACHINE_CACHE_DIR, as the machine does
// at boot.
func Runner(cfg *config.Config, log *slog.Logger) *installers.Runner {
	return &installers.Runner{MarkerDir: filepath.Join(cfg.CacheDir, "markers"), Parallel: 4,
		Timeout: cfg.InstallTimeout, Strict: cfg.InstallStrict, Log: log}
}
