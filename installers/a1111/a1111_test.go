package a1111_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/installers"
	"github.com/emp-job-queue/machine/installers/a1111"
)

// gitRepo makes a local repository with two commits and returns its URL and the first commit.
func gitRepo(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	git := func(args ...string) string {
		out, err := exec.Command("git", append([]string{"-C", dir, "-c", "user.email=t@e", "-c", "user.name=t"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git("init", "-q", "-b", "master")
	// launch.py --exit is A1111's environment preparation: here it records how it was run.
	write("launch.py", "import sys\nopen('prepared.txt', 'w').write(' '.join(sys.argv[1:]) + ' ' + sys.prefix)\n")
	write("webui.py", "print('webui')\n")
	write("version.txt", "pinned\n")
	git("add", ".")
	git("commit", "-q", "-m", "pinned")
	pinned := git("rev-parse", "HEAD")
	write("version.txt", "newer\n")
	git("commit", "-q", "-am", "newer")
	return "file://" + dir, pinned
}

// A1111 is installed at the pinned commit, not the branch's head, into its own venv, and its
// environment is prepared once; a second boot skips every step.
func TestInstallAtThePinnedCommit(t *testing.T) {
	repo, pinned := gitRepo(t)
	work := t.TempDir()
	in := a1111.Install{Dir: filepath.Join(work, "a1111"), RepoURL: repo, Commit: pinned}
	var events []installers.Event
	r := &installers.Runner{MarkerDir: filepath.Join(work, "markers"), OnEvent: func(ev installers.Event) { events = append(events, ev) }}
	if err := r.Run(context.Background(), in.Stages()...); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(in.Dir, "version.txt")); string(b) != "pinned\n" {
		t.Errorf("checkout is at %q, not the pinned commit", b)
	}
	prepared, err := os.ReadFile(filepath.Join(in.Dir, "prepared.txt"))
	if err != nil || !strings.HasPrefix(string(prepared), "--exit --skip-torch-cuda-test "+in.Venv()) {
		t.Errorf("launch.py ran as %q (%v); want --exit in the venv", prepared, err)
	}
	events = nil
	if err := r.Run(context.Background(), in.Stages()...); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(events, func(ev installers.Event) bool { return ev.Phase == installers.Started }) {
		t.Errorf("second boot ran steps: %+v", events)
	}
}

func TestServiceSpec(t *testing.T) {
	in := a1111.Install{Dir: "/workspace/a1111"}
	gpu := a1111.ServiceSpec(in, "a1111-gpu1", 7861, 1, "--medvram", "/workspace/ComfyUI/models/checkpoints")
	want := "/workspace/a1111/.venv/bin/python webui.py --port 7861 --api --nowebui --ckpt-dir /workspace/ComfyUI/models/checkpoints --xformers --medvram"
	if got := strings.Join(gpu.Command, " "); got != want {
		t.Errorf("GPU command = %s\nwant %s", got, want)
	}
	if !slices.Contains(gpu.Env, "CUDA_VISIBLE_DEVICES=1") || gpu.Probe.Target != "http://127.0.0.1:7861/sdapi/v1/options" || gpu.Dir != in.Dir {
		t.Errorf("GPU spec = %+v", gpu)
	}
	cpu := a1111.ServiceSpec(in, "a1111-cpu0", 7860, -1, "", "")
	if got := strings.Join(cpu.Command, " "); !strings.HasSuffix(got, "--nowebui --skip-torch-cuda-test --use-cpu all") {
		t.Errorf("CPU command = %s", got)
	}
}
