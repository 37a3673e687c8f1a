package supervisor_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/emp-job-queue/machine/core/supervisor"
)

// bystander is an unrelated process, the leader of its own process group like many daemons,
// that a planted pid file points at.
func bystander(t *testing.T) (pid int, ticks uint64) {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	ticks, err = strconv.ParseUint(strings.Fields(s[strings.LastIndexByte(s, ')')+2:])[19], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid, ticks
}

// syncBuffer is a log destination the supervisor's goroutines write while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A pid file planted in the run directory (by whoever could write there, or left by a machine
// long gone with the pid since reused) names a live, unrelated process with its true start
// time and command line. The machine must neither stop it as a service "from an older
// configuration" nor adopt it (and stop it later): it leaves it alone, says so, and starts the
// real service.
func TestPlantedPidFileNeverSignalsAnotherProcess(t *testing.T) {
	for _, sameConfig := range []bool{false, true} {
		t.Run(fmt.Sprintf("spec hash matches %v", sameConfig), func(t *testing.T) {
			runDir := t.TempDir()
			s := spec(t, "svc")
			pid, ticks := bystander(t)
			hash := "from-an-older-config"
			if sameConfig {
				hash = supervisor.SpecHash(s)
			}
			planted, _ := json.Marshal(map[string]any{"pid": pid, "start_ticks": ticks, "spec_hash": hash,
				"argv": []string{"sleep", "300"}})
			if err := os.MkdirAll(filepath.Join(runDir, "services"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(runDir, "services", "svc.pid"), planted, 0o600); err != nil {
				t.Fatal(err)
			}
			logs := &syncBuffer{}
			r := start(t, supervisor.Params{Specs: []supervisor.Spec{s}, RunDir: runDir,
				Log: slog.New(slog.NewTextHandler(logs, nil))})
			waitFor(t, "the real service to be ready, or the bystander taken for it", func() bool {
				return r.sup.Ready("svc") || r.status("svc").PID == pid
			})
			if st := r.status("svc"); st.PID == pid || st.Adopted {
				t.Fatalf("the bystander was taken for the service: %+v", st)
			}
			r.stop()
			if processGone(pid) {
				t.Fatal("the machine killed the unrelated process a planted pid file named")
			}
			if !strings.Contains(logs.String(), "not this service") {
				t.Errorf("the planted pid file was not reported:\n%s", logs)
			}
		})
	}
}

// The run and log directories decide what the machine signals and shows, so one another user
// can write to (or that belongs to another user) is refused at start with a sentence that says
// what to do.
func TestRunAndLogDirectoriesMustBeTheMachinesOwn(t *testing.T) {
	open := t.TempDir()
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	_, err := supervisor.New(supervisor.Params{RunDir: open, LogDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "MACHINE_RUN_DIR") || !strings.Contains(err.Error(), "chmod go-w") {
		t.Errorf("a world-writable run directory: %v", err)
	}
	other := "/" // not ours unless we are root; then a directory given to nobody
	if os.Geteuid() == 0 {
		other = t.TempDir()
		if err := os.Chown(other, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	_, err = supervisor.New(supervisor.Params{RunDir: t.TempDir(), LogDir: other})
	if err == nil || !strings.Contains(err.Error(), "MACHINE_LOG_DIR") || !strings.Contains(err.Error(), "belongs to user") {
		t.Errorf("a log directory of another user: %v", err)
	}
}

// A symbolic link planted where a service's log goes would make the machine append the
// service's output to any file it can write, and show that file's content in /pm2/logs. The
// machine refuses the link and leaves the file alone.
func TestSymlinkedLogIsRefused(t *testing.T) {
	logDir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(victim, []byte("precious data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(logDir, "svc.log")); err != nil {
		t.Fatal(err)
	}
	r := start(t, supervisor.Params{Specs: []supervisor.Spec{spec(t, "svc", "LOG_EVERY_MS=5")}, LogDir: logDir})
	waitFor(t, "the service to be refused, or the link written through", func() bool {
		b, _ := os.ReadFile(victim)
		return r.status("svc").State == supervisor.Errored || string(b) != "precious data\n"
	})
	if e := r.status("svc").Error; !strings.Contains(e, "symbolic link") {
		t.Errorf("error = %q; want it to name the link", e)
	}
	r.stop()
	if b, _ := os.ReadFile(victim); string(b) != "precious data\n" {
		t.Errorf("the link's target was written: %q", b)
	}
	if lines, _ := r.sup.Logs("svc", 0); strings.Contains(strings.Join(lines, "\n"), "precious") {
		t.Error("the link's target shows in the service's logs")
	}
}

// Rotation creates name.log.1 fresh: a link planted there is replaced, not written through.
func TestRotationDoesNotWriteThroughALink(t *testing.T) {
	logDir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(victim, []byte("precious data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rotated := filepath.Join(logDir, "chatty.log.1")
	if err := os.Symlink(victim, rotated); err != nil {
		t.Fatal(err)
	}
	start(t, supervisor.Params{Specs: []supervisor.Spec{spec(t, "chatty", "LOG_EVERY_MS=1")}, LogDir: logDir,
		LogMaxBytes: 2000, LogKeep: 1})
	waitFor(t, "a rotation", func() bool {
		st, err := os.Lstat(rotated)
		b, _ := os.ReadFile(victim)
		return (err == nil && st.Mode().IsRegular() && st.Size() > 0) || string(b) != "precious data\n"
	})
	if b, _ := os.ReadFile(victim); string(b) != "precious data\n" {
		t.Errorf("rotation wrote through the planted link: %q…", b[:min(len(b), 60)])
	}
}
