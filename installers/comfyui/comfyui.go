// Package comfyui installs ComfyUI, its custom nodes and its models, and describes how the
// supervisor runs one instance per GPU.
package comfyui

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/emp-job-queue/machine/core/supervisor"
	"github.com/emp-job-queue/machine/installers"
)

// Manifest lists custom nodes (the old runtime's config_nodes.json format) and models.
type Manifest struct {
	CustomNodes []Node  `json:"custom_nodes"`
	Models      []Model `json:"models"`
}

// Node is one custom node, as the old runtime's manifest describes it.
type Node struct {
	Name         string            `json:"name"`
	URL          string            `json:"url"` // may start with "git clone "
	Requirements bool              `json:"requirements"`
	Recursive    bool              `json:"recursive,omitempty"`
	Branch       string            `json:"branch,omitempty"`
	Commit       string            `json:"commit,omitempty"`
	CustomScript string            `json:"custom_script,omitempty"` // shell, run in the node's directory after the clone
	Env          map[string]string `json:"env,omitempty"`           // written to the node's .env; ${VAR} comes from the machine's environment
}

// Model is one model file.
type Model struct {
	URL    string `json:"url"`
	Dest   string `json:"destination"` // relative to the ComfyUI directory, e.g. models/checkpoints/sdxl.safetensors
	SHA256 string `json:"sha256,omitempty"`
}

// LoadManifest reads a manifest file and checks every entry, reporting every problem at once.
func LoadManifest(path string) (Manifest, error) {
	var m Manifest
	data, err := os.ReadFile(path)
	if err != nil {
		return m, fmt.Errorf("read ComfyUI manifest: %w", err)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("ComfyUI manifest %s is not valid JSON (%v); see the README for its format", path, err)
	}
	var problems []string
	for i, n := range m.CustomNodes {
		if !safeName.MatchString(n.Name) || strings.TrimSpace(cloneURL(n.URL)) == "" {
			problems = append(problems, fmt.Sprintf("custom node %d needs a plain name and a url (got %q, %q)", i+1, n.Name, installers.Redact(n.URL)))
		}
		if err := installers.CheckGitArgs(cloneURL(n.URL), n.Branch, n.Commit); err != nil {
			problems = append(problems, fmt.Sprintf("custom node %d (%s): %v", i+1, n.Name, err))
		}
	}
	for i, mo := range m.Models {
		if mo.URL == "" || mo.Dest == "" || filepath.IsAbs(mo.Dest) || strings.Contains(filepath.Clean(mo.Dest), "..") {
			problems = append(problems, fmt.Sprintf("model %d needs a url and a destination inside the ComfyUI directory (got %q)", i+1, mo.Dest))
		}
		if mo.SHA256 != "" && !sha256Hex.MatchString(strings.ToLower(mo.SHA256)) {
			problems = append(problems, fmt.Sprintf("model %d: sha256 %q is not 64 hex digits", i+1, mo.SHA256))
		}
	}
	if len(problems) > 0 {
		return m, fmt.Errorf("ComfyUI manifest %s: %s", path, strings.Join(problems, "; "))
	}
	return m, nil
}

var (
	safeName  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)
	envRef    = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
)

func cloneURL(u string) string {
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(u), "git clone "))
}

// Install describes one ComfyUI installation.
type Install struct {
	Dir      string // the checkout, e.g. /workspace/ComfyUI
	RepoURL  string
	Branch   string
	Commit   string
	Python   string // the interpreter that creates the venv; default python3
	Manifest Manifest
	Getenv   func(string) string // for ${VAR} in node env files
	Download *installers.Downloader
	// ExtraModelPaths, when set, is an extra_model_paths.yaml every instance is started with
	// (--extra-model-paths-config): the shared model cache (WriteExtraModelPaths).
	ExtraModelPaths string
}

// Venv is where the installation's Python lives.
func (in Install) Venv() string { return filepath.Join(in.Dir, ".venv") }

// Stages returns the install steps: the checkout, the venv, ComfyUI's requirements, then every
// custom node and model in parallel (each optional: a broken one fails alone).
func (in Install) Stages() [][]installers.Step {
	python := in.Python
	if python == "" {
		python = "python3"
	}
	pip := filepath.Join(in.Venv(), "bin", "pip")
	stages := [][]installers.Step{
		{{
			Name: "clone ComfyUI", Marker: "comfyui " + in.Dir + " " + in.RepoURL + " " + in.Branch + " " + in.Commit,
			Run: func(ctx context.Context, _ func(int64, int64)) error {
				return gitCheckout(ctx, in.RepoURL, in.Branch, in.Commit, in.Dir, false)
			},
		}},
		{{
			Name: "create the Python venv", Marker: "venv " + in.Venv(),
			Run: func(ctx context.Context, _ func(int64, int64)) error {
				if _, err := os.Stat(filepath.Join(in.Venv(), "bin", "python")); err == nil {
					return nil
				}
				return installers.Command(ctx, in.Dir, nil, python, "-m", "venv", in.Venv())
			},
		}},
		{{
			Name: "install ComfyUI's requirements",
			MarkerOf: func() string {
				return "requirements " + fileHash(filepath.Join(in.Dir, "requirements.txt")) + " " + in.Dir
			},
			Run: func(ctx context.Context, _ func(int64, int64)) error {
				return installers.Command(ctx, in.Dir, pipEnv, pip, "install", "-r", "requirements.txt")
			},
		}},
	}
	var items []installers.Step
	for _, n := range in.Manifest.CustomNodes {
		items = append(items, in.nodeStep(n, pip))
	}
	for _, m := range in.Manifest.Models {
		items = append(items, installers.Step{
			Name: "model " + m.Dest, Optional: true, Marker: "model " + in.Dir + " " + m.Dest + " " + m.URL + " " + m.SHA256,
			Run: func(ctx context.Context, progress func(int64, int64)) error {
				return in.Download.Fetch(ctx, m.URL, m.SHA256, filepath.Join(in.Dir, m.Dest), progress)
			},
		})
	}
	if len(items) > 0 {
		stages = append(stages, items)
	}
	return stages
}

// fileHash names a file's content, so a changed requirements.txt is installed again.
func fileHash(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "unread"
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

func (in Install) nodeStep(n Node, pip string) installers.Step {
	dir := filepath.Join(in.Dir, "custom_nodes", n.Name)
	return installers.Step{
		Name: "custom node " + n.Name, Optional: true,
		Marker: fmt.Sprintf("node %s %s %s %s %v %q %v", dir, cloneURL(n.URL), n.Branch, n.Commit, n.Requirements, n.CustomScript, n.Env),
		Run: func(ctx context.Context, _ func(int64, int64)) error {
			if err := gitCheckout(ctx, cloneURL(n.URL), n.Branch, n.Commit, dir, n.Recursive); err != nil {
				return err
			}
			if n.Requirements {
				if _, err := os.Stat(filepath.Join(dir, "requirements.txt")); err == nil {
					if err := installers.Command(ctx, dir, pipEnv, pip, "install", "-r", "requirements.txt"); err != nil {
						return err
					}
				}
			}
			if len(n.Env) > 0 {
				if err := in.writeEnv(dir, n.Env); err != nil {
					return err
				}
			}
			if n.CustomScript != "" {
				return installers.Command(ctx, dir, nil, "sh", "-c", n.CustomScript)
			}
			return nil
		},
	}
}

// pipEnv keeps pip from waiting for input that never comes.
var pipEnv = []string{"PIP_NO_INPUT=1"}

// writeEnv writes the node's .env, filling ${VAR} from the machine's environment. Values may
// be secrets: they go to the file (mode 0600) and nowhere else.
func (in Install) writeEnv(dir string, env map[string]string) error {
	getenv := in.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	var b strings.Builder
	for k, v := range env {
		v = envRef.ReplaceAllStringFunc(v, func(ref string) string { return getenv(envRef.FindStringSubmatch(ref)[1]) })
		fmt.Fprintf(&b, "%s=%s\n", k, strconv.Quote(v))
	}
	return os.WriteFile(filepath.Join(dir, ".env"), []byte(b.String()), 0o600)
}

// gitCheckout puts url at branch/commit in dir (installers.GitCheckout).
func gitCheckout(ctx context.Context, url, branch, commit, dir string, recursive bool) error {
	return installers.GitCheckout(ctx, url, branch, commit, dir, recursive)
}

// ServiceSpec is how the supervisor runs one ComfyUI instance, name, on port and GPU gpu (-1:
// none, so it runs with --cpu): the venv's Python with main.py, listening on 127.0.0.1 only,
// plus COMFY_ARGS, ready when /system_stats answers.
func ServiceSpec(in Install, name string, port, gpu int, comfyArgs string) supervisor.Spec {
	args := []string{filepath.Join(in.Venv(), "bin", "python"), "main.py", "--listen", "127.0.0.1", "--port", strconv.Itoa(port)}
	env := []string{"PORT=" + strconv.Itoa(port)}
	if gpu < 0 {
		args = append(args, "--cpu")
	} else {
		args = append(args, "--cuda-device", strconv.Itoa(gpu))
		env = append(env, "CUDA_VISIBLE_DEVICES="+strconv.Itoa(gpu))
	}
	if in.ExtraModelPaths != "" {
		args = append(args, "--extra-model-paths-config", in.ExtraModelPaths)
	}
	args = append(args, strings.Fields(comfyArgs)...)
	return supervisor.Spec{
		Name: name, Command: args, Dir: in.Dir, Env: env, Port: port, GPU: gpu,
		Probe: supervisor.Probe{Kind: "http", Target: fmt.Sprintf("http://127.0.0.1:%d/system_stats", port)},
	}
}

// Prepare runs the installation's stages (a second run skips what is done). A custom node or
// model that fails does not fail it, unless runner.Strict: ComfyUI starts without it, and the
// failure is logged.
func (in Install) Prepare(ctx context.Context, runner *installers.Runner) error {
	log := runner.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log.Info("installing ComfyUI (steps already done are skipped)", "dir", in.Dir)
	err := runner.Run(ctx, in.Stages()...)
	if err == nil {
		return nil
	}
	var partial *installers.StepError
	if errors.As(err, &partial) && !runner.Strict && ctx.Err() == nil && in.installedCore() {
		log.Error("some custom nodes or models did not install; ComfyUI starts without them", "err", err)
		return nil
	}
	return fmt.Errorf("ComfyUI install: %w", err)
}

// installedCore reports whether ComfyUI itself (checkout and venv) is in place.
func (in Install) installedCore() bool {
	_, err1 := os.Stat(filepath.Join(in.Dir, "main.py"))
	_, err2 := os.Stat(filepath.Join(in.Venv(), "bin", "python"))
	return err1 == nil && err2 == nil
}
