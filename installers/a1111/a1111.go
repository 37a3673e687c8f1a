// Package a1111 installs the AUTOMATIC1111 Stable Diffusion WebUI at a pinned commit (as the
// old runtime did) and describes how the supervisor runs one API-only instance per GPU.
package a1111

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/emp-job-queue/machine/core/supervisor"
	"github.com/emp-job-queue/machine/installers"
)

// Install describes one A1111 installation.
type Install struct {
	Dir     string // the checkout, e.g. /workspace/a1111
	RepoURL string
	Branch  string // empty: the repository's default branch
	Commit  string
	Python  string // the interpreter that creates the venv; default python3
}

// Venv is where the installation's Python lives.
func (in Install) Venv() string { return filepath.Join(in.Dir, ".venv") }

// Stages returns the install steps: the checkout at the pinned commit, the venv, then A1111's
// own environment preparation (`launch.py --exit`: its requirements, torch and the repositories
// it needs), which is done again only when the commit changes.
func (in Install) Stages() [][]installers.Step {
	python := in.Python
	if python == "" {
		python = "python3"
	}
	venvPython := filepath.Join(in.Venv(), "bin", "python")
	return [][]installers.Step{
		{{
			Name: "clone A1111", Marker: "a1111 " + in.Dir + " " + in.RepoURL + " " + in.Branch + " " + in.Commit,
			Run: func(ctx context.Context, _ func(int64, int64)) error {
				return installers.GitCheckout(ctx, in.RepoURL, in.Branch, in.Commit, in.Dir, false)
			},
		}},
		{{
			Name: "create A1111's Python venv", Marker: "venv " + in.Venv(),
			Run: func(ctx context.Context, _ func(int64, int64)) error {
				if _, err := os.Stat(venvPython); err == nil {
					return nil
				}
				return installers.Command(ctx, in.Dir, nil, python, "-m", "venv", in.Venv())
			},
		}},
		{{
			Name: "prepare A1111's environment", Marker: "a1111 prepare " + in.Dir + " " + in.Commit,
			Run: func(ctx context.Context, _ func(int64, int64)) error {
				env := append(os.Environ(), "VIRTUAL_ENV="+in.Venv(), "PYTHONUNBUFFERED=1")
				return installers.Command(ctx, in.Dir, env, venvPython, "launch.py", "--exit", "--skip-torch-cuda-test")
			},
		}},
	}
}

// ServiceSpec is how the supervisor runs one A1111 instance, name, on port and GPU gpu (-1:
// none), as the old runtime did: webui.py --port <7860+i> --api --nowebui (the API alone, on
// 127.0.0.1), --ckpt-dir when checkpoints are shared, --xformers on a GPU or
// --skip-torch-cuda-test --use-cpu all without one, then A1111_ARGS. It is ready when
// /sdapi/v1/options answers.
func ServiceSpec(in Install, name string, port, gpu int, args, ckptDir string) supervisor.Spec {
	cmd := []string{filepath.Join(in.Venv(), "bin", "python"), "webui.py", "--port", strconv.Itoa(port), "--api", "--nowebui"}
	if ckptDir != "" {
		cmd = append(cmd, "--ckpt-dir", ckptDir)
	}
	env := []string{"PORT=" + strconv.Itoa(port), "PYTHONUNBUFFERED=1"}
	if gpu < 0 {
		cmd = append(cmd, "--skip-torch-cuda-test", "--use-cpu", "all")
	} else {
		cmd = append(cmd, "--xformers")
		env = append(env, "CUDA_VISIBLE_DEVICES="+strconv.Itoa(gpu))
	}
	cmd = append(cmd, strings.Fields(args)...)
	return supervisor.Spec{
		Name: name, Command: cmd, Dir: in.Dir, Env: env, Port: port, GPU: gpu,
		Probe: supervisor.Probe{Kind: "http", Target: fmt.Sprintf("http://127.0.0.1:%d/sdapi/v1/options", port)},
	}
}
