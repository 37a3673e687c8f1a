// Package ollama installs what the ollama connector needs: the Ollama binary (found on PATH or
// where the old runtime put it, or installed with the official script where the operator allows
// it), then the models of OLLAMA_DEFAULT_MODELS, pulled through the daemon's /api/pull as
// install steps with markers and byte progress. It also describes how the supervisor runs
// `ollama serve`.
package ollama

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emp-job-queue/machine/core/supervisor"
	"github.com/emp-job-queue/machine/installers"
)

// OfficialScript is the official install script (it needs the internet and root).
const OfficialScript = "https://ollama.com/install.sh"

// ErrNotInstalled says no Ollama binary was found and the machine may not install one.
var ErrNotInstalled = errors.New("ollama is not installed (no ollama on PATH, in /usr/local/bin, or at OLLAMA_BIN); " +
	"install it with `curl -fsSL https://ollama.com/install.sh | sh` (needs the internet), set OLLAMA_INSTALL=script to let the machine run that script, or set OLLAMA_BIN to the binary")

// Install describes the Ollama the machine runs.
type Install struct {
	Binary      string        // OLLAMA_BIN; empty: PATH, /usr/local/bin, /usr/bin, then <Workspace>/ollama/bin
	Workspace   string        // where the old runtime installed Ollama (<Workspace>/ollama)
	ScriptURL   string        // the install script run when no binary is found; empty: never install
	Port        int           // OLLAMA_BASE_PORT
	ModelsDir   string        // OLLAMA_MODELS: where models live
	Models      []string      // OLLAMA_DEFAULT_MODELS, pulled at install
	PullTimeout time.Duration // one model's pull (OLLAMA_MODEL_DOWNLOAD_TIMEOUT); default 30 minutes
	Env         []string      // extra daemon settings (OLLAMA_KEEP_ALIVE, OLLAMA_MAX_LOADED_MODELS, …)
	Log         *slog.Logger
}

// Find returns the Ollama binary, or ErrNotInstalled.
func (in Install) Find() (string, error) {
	if in.Binary != "" {
		if st, err := os.Stat(in.Binary); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return "", fmt.Errorf("OLLAMA_BIN %s is not an executable file; point it at the ollama binary, or unset it to look on PATH", in.Binary)
		}
		return in.Binary, nil
	}
	if p, err := exec.LookPath("ollama"); err == nil {
		return p, nil
	}
	candidates := []string{"/usr/local/bin/ollama", "/usr/bin/ollama"}
	if in.Workspace != "" {
		candidates = append(candidates, filepath.Join(in.Workspace, "ollama", "bin", "ollama"))
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	return "", ErrNotInstalled
}

// Run installs Ollama where needed and pulls the models, each an install step: a model pulled
// on an earlier boot is skipped (its marker), and a model that fails to pull fails alone. The
// pulls go through a daemon the installer starts for them (or one already answering on the
// port) and stops at the end; the supervisor runs the real one afterwards. It returns the
// binary.
func (in Install) Run(ctx context.Context, r *installers.Runner) (string, error) {
	var bin string
	d := &daemon{in: in, bin: &bin}
	defer d.stop()
	find := installers.Step{
		Name: "install Ollama",
		Run: func(ctx context.Context, _ func(int64, int64)) error {
			b, err := in.Find()
			if errors.Is(err, ErrNotInstalled) && in.ScriptURL != "" {
				if err := in.runScript(ctx); err != nil {
					return err
				}
				if b, err = in.Find(); err != nil {
					return fmt.Errorf("the Ollama install script ran, but no ollama binary appeared on PATH or in /usr/local/bin; set OLLAMA_BIN to where it put it")
				}
			}
			if err != nil {
				return err
			}
			bin = b
			if in.Log != nil {
				out, _ := exec.CommandContext(ctx, b, "--version").Output()
				in.Log.Info("ollama found", "path", b, "version", strings.TrimSpace(string(out)))
			}
			return nil
		},
	}
	var pulls []installers.Step
	for _, m := range in.Models {
		pulls = append(pulls, installers.Step{
			Name: "ollama model " + m, Optional: true, Marker: "ollama model " + in.ModelsDir + " " + canonical(m),
			Run: func(ctx context.Context, progress func(int64, int64)) error {
				if err := d.ensure(ctx); err != nil {
					return err
				}
				return in.pull(ctx, d.base(), m, progress)
			},
		})
	}
	stages := [][]installers.Step{{find}}
	if len(pulls) > 0 {
		stages = append(stages, pulls)
	}
	err := r.Run(ctx, stages...)
	return bin, err
}

// canonical adds Ollama's default tag, so "llama3.2" and "llama3.2:latest" share a marker.
func canonical(name string) string {
	if strings.Contains(name[strings.LastIndex(name, "/")+1:], ":") {
		return name
	}
	return name + ":latest"
}

func (in Install) runScript(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, in.ScriptURL, nil)
	if err != nil {
		return fmt.Errorf("OLLAMA_INSTALL_URL %q is not a URL: %w", in.ScriptURL, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("download the Ollama install script from %s (%w); install Ollama by hand or give the machine internet access", in.ScriptURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("download the Ollama install script from %s: %s; install Ollama by hand", in.ScriptURL, resp.Status)
	}
	script, err := os.CreateTemp("", "ollama-install-*.sh")
	if err != nil {
		return err
	}
	defer os.Remove(script.Name())
	if _, err := io.Copy(script, io.LimitReader(resp.Body, 1<<20)); err != nil {
		script.Close()
		return fmt.Errorf("download the Ollama install script: %w", err)
	}
	script.Close()
	return installers.Command(ctx, "", nil, "sh", script.Name())
}

// pull downloads one model through /api/pull, reporting the bytes of all its layers.
func (in Install) pull(ctx context.Context, base, model string, progress func(int64, int64)) error {
	timeout := in.PullTimeout
	if timeout <= 0 {
		timeout = 30 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body, _ := json.Marshal(map[string]any{"model": model, "stream": true})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/pull", bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("pull ollama model %s: %w", model, err)
	}
	defer resp.Body.Close()
	type layer struct{ done, total int64 }
	layers := map[string]layer{}
	var order []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var st struct {
			Status    string `json:"status"`
			Digest    string `json:"digest"`
			Total     int64  `json:"total"`
			Completed int64  `json:"completed"`
			Error     string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &st); err != nil {
			return fmt.Errorf("pull ollama model %s: the daemon answered %s with a line that is not JSON (%v)", model, resp.Status, err)
		}
		if st.Error != "" {
			return fmt.Errorf("ollama could not pull model %q (%s); check the name in OLLAMA_DEFAULT_MODELS against https://ollama.com/library", model, st.Error)
		}
		if st.Status == "success" {
			return nil
		}
		if st.Digest != "" && st.Total > 0 {
			if _, seen := layers[st.Digest]; !seen {
				order = append(order, st.Digest)
			}
			layers[st.Digest] = layer{st.Completed, st.Total}
			var done, total int64
			for _, d := range order {
				done, total = done+layers[d].done, total+layers[d].total
			}
			progress(done, total)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("pull ollama model %s: %w", model, err)
	}
	return fmt.Errorf("pull ollama model %s: the daemon ended the pull without success", model)
}

// daemonEnv is the environment `ollama serve` runs with: where it listens and keeps models.
func (in Install) daemonEnv(port int) []string {
	env := []string{"OLLAMA_HOST=127.0.0.1:" + strconv.Itoa(port)}
	if in.ModelsDir != "" {
		env = append(env, "OLLAMA_MODELS="+in.ModelsDir)
	}
	return append(env, in.Env...)
}

// ServiceSpec is how the supervisor runs the daemon of a service instance, name: `ollama serve`
// on 127.0.0.1:<port> with OLLAMA_HOST and OLLAMA_MODELS, serving as many requests at once as
// the instance has slots (unless OLLAMA_NUM_PARALLEL says otherwise), ready when /api/version
// answers. It sees every GPU.
func ServiceSpec(bin string, in Install, name string, port, slots int) supervisor.Spec {
	env := in.daemonEnv(port)
	if !hasKey(env, "OLLAMA_NUM_PARALLEL") && slots > 0 {
		env = append(env, "OLLAMA_NUM_PARALLEL="+strconv.Itoa(slots))
	}
	return supervisor.Spec{
		Name: name, Command: []string{bin, "serve"}, Env: env, Port: port, GPU: -1, StopGrace: 10 * time.Second,
		Probe: supervisor.Probe{Kind: "http", Target: fmt.Sprintf("http://127.0.0.1:%d/api/version", port)},
	}
}

func hasKey(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

// daemon is the Ollama the installer pulls through: one already answering on the port (a
// service kept from an earlier run), or one it starts on first need and stops when done.
type daemon struct {
	in  Install
	bin *string

	mu  sync.Mutex
	cmd *exec.Cmd
	out *tailBuffer
}

func (d *daemon) base() string { return fmt.Sprintf("http://127.0.0.1:%d", d.in.Port) }

func (d *daemon) answering(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.base()+"/api/version", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (d *daemon) ensure(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.answering(ctx) {
		return nil
	}
	if d.cmd == nil {
		d.out = &tailBuffer{}
		cmd := exec.Command(*d.bin, "serve")
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, d.in.daemonEnv(d.in.Port)...)
		cmd.Stdout, cmd.Stderr = d.out, d.out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start `%s serve` to pull models: %w", *d.bin, err)
		}
		d.cmd = cmd
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		for !d.answering(ctx) {
			select {
			case <-exited:
				d.cmd = nil
				return fmt.Errorf("`ollama serve` exited before answering on port %d; is the port taken? Its output: %s", d.in.Port, d.out.String())
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// stop ends the daemon the installer started: SIGTERM to its group, SIGKILL after 10 s.
func (d *daemon) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	pid := d.cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	for i := 0; i < 100 && syscall.Kill(-pid, 0) == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	d.cmd = nil
}

// tailBuffer keeps the last 2 KiB written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2048 {
		t.buf = t.buf[len(t.buf)-2048:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}
