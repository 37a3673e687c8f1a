package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const testP5 = "/*! p5.js v0.0.0 (layer test) */ window.p5 = function () {};\n"

// p5Package writes a p5 npm package (the registry's layout) and returns its path and sha256.
func p5Package(t *testing.T) (string, string) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range map[string]string{"package/package.json": `{"name":"p5","version":"0.0.0"}`, "package/lib/p5.min.js": testP5} {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(body))
	}
	_ = tw.Close()
	_ = zw.Close()
	p := filepath.Join(t.TempDir(), "p5-0.0.0.tgz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return p, hex.EncodeToString(sum[:])
}

// localComfyUI makes a git repository standing in for ComfyUI and returns its URL and commit.
func localComfyUI(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	_ = os.WriteFile(filepath.Join(dir, "main.py"), []byte("print('comfy')\n"), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "requirements.txt"), nil, 0o644)
	for _, args := range [][]string{{"init", "-q", "-b", "master"}, {"add", "."},
		{"-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-m", "init"}} {
		if out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	head, err := exec.Command("git", "-C", dir, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return "file://" + dir, strings.TrimSpace(string(head))
}

// The unified stage's `machine install` commands, exactly as the Dockerfile writes them, run
// here on Debian with local sources: ComfyUI from a local git repository at its commit, p5.js
// from a local package, Debian's Chromium found on PATH. Paths the image uses live under a
// temporary root; files the image COPYs come from the build context. Run again, every step is
// skipped.
func TestDockerfileLayerCommandsRunNatively(t *testing.T) {
	d, _ := loadDockerfile(t)
	unified := d.Stage("unified")
	if unified == nil || len(unified.Installs) == 0 {
		t.Fatal("the unified stage installs nothing")
	}
	root := t.TempDir()
	repo, commit := localComfyUI(t)
	p5, p5sum := p5Package(t)
	env := map[string]string{}
	for k, v := range unified.Env {
		switch {
		case k == "PATH" || k == "LD_LIBRARY_PATH" || strings.HasPrefix(k, "NVIDIA_"):
		case unified.Copied[v] != "":
			env[k], _ = filepath.Abs(filepath.Join(repoRoot, unified.Copied[v]))
		case filepath.IsAbs(v):
			env[k] = filepath.Join(root, v)
		default:
			env[k] = v
		}
	}
	env["COMFYUI_REPO_URL"], env["COMFYUI_COMMIT"] = repo, commit

	runAll := func() string {
		var logs strings.Builder
		for _, c := range unified.Installs {
			args := append([]string(nil), c.Args...)
			for i := range args {
				switch {
				case i > 0 && args[i-1] == "--from":
					args[i] = p5
				case i > 0 && args[i-1] == "--sha256":
					args[i] = p5sum
				}
			}
			callEnv := map[string]string{}
			for k, v := range env {
				callEnv[k] = v
			}
			for _, kv := range c.Env {
				k, v, _ := strings.Cut(kv, "=")
				callEnv[k] = v
			}
			cmd := command(callEnv, args...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("machine %s (stage %s): %v\n%s", strings.Join(args, " "), c.Stage, err, out)
			}
			logs.Write(out)
		}
		return logs.String()
	}
	out := runAll()
	for _, f := range []string{"main.py", ".venv/bin/python"} {
		if _, err := os.Stat(filepath.Join(env["COMFYUI_DIR"], f)); err != nil {
			t.Errorf("ComfyUI's %s is missing: %v", f, err)
		}
	}
	if got, _ := os.ReadFile(env["PLAYWRIGHT_P5_JS"]); string(got) != testP5 {
		t.Errorf("PLAYWRIGHT_P5_JS holds %q, want the package's p5.min.js", got)
	}
	for _, want := range []string{"ComfyUI (" + commit + ") installed in " + env["COMFYUI_DIR"], "Chromium ", "p5.js at " + env["PLAYWRIGHT_P5_JS"]} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	again := runAll()
	if strings.Contains(again, `"install step started"`) || !strings.Contains(again, `"install step skipped"`) {
		t.Errorf("a second run installed again:\n%s", again)
	}
}

func TestInstallLayerRefusesBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"install", "--layer", "cuda"}, `unknown layer "cuda"; the layers are comfyui, browser, p5`},
		{[]string{"install", "--layer", "p5", "--from", "/nonexistent/p5.tgz"}, "PLAYWRIGHT_P5_JS is unset"},
	} {
		out, err := command(nil, c.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("machine %v: %v\n%s\nwant %q", c.args, err, out, c.want)
		}
	}
}
