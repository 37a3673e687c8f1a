package supervisor_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/supervisor"
	"github.com/emp-job-queue/machine/internal/testutil"
)

var testService string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "testservice")
	if err != nil {
		panic(err)
	}
	testService = filepath.Join(dir, "testservice")
	if err := testutil.Build("../../internal/testservice", testService); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// spec is the test service on a free port with an HTTP readiness probe.
func spec(t testing.TB, name string, env ...string) supervisor.Spec {
	port := testutil.Port(t)
	return supervisor.Spec{
		Name: name, Command: []string{testService}, Port: port, GPU: -1,
		Env:   append([]string{fmt.Sprintf("PORT=%d", port)}, env...),
		Probe: supervisor.Probe{Kind: "http", Target: fmt.Sprintf("http://127.0.0.1:%d/", port), Every: 20 * time.Millisecond},
		Policy: supervisor.Policy{Initial: 20 * time.Millisecond, Factor: 1.5, Max: 100 * time.Millisecond,
			StableAfter: 10 * time.Second, MaxCrashes: 3},
		StopGrace: time.Second,
	}
}

type run struct {
	sup    *supervisor.Supervisor
	cancel context.CancelFunc
	done   chan struct{}
}

func start(t testing.TB, p supervisor.Params) *run {
	t.Helper()
	if p.RunDir == "" {
		p.RunDir = t.TempDir()
	}
	if p.LogDir == "" {
		p.LogDir = t.TempDir()
	}
	sup, err := supervisor.New(p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{sup: sup, cancel: cancel, done: make(chan struct{})}
	go func() { sup.Run(ctx); close(r.done) }()
	t.Cleanup(r.stop)
	return r
}

func (r *run) stop() {
	r.cancel()
	<-r.done
}

func (r *run) status(name string) supervisor.Status {
	for _, s := range r.sup.Statuses() {
		if s.Name == name {
			return s
		}
	}
	return supervisor.Status{}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// processGone reports whether pid has ended (a zombie waiting for a reaper has ended too).
func processGone(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return true
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(data)
	return strings.HasPrefix(s[strings.LastIndexByte(s, ')')+2:], "Z")
}

func TestStartReadyLogsAndStop(t *testing.T) {
	var changes atomic.Int32
	r := start(t, supervisor.Params{Specs: []supervisor.Spec{spec(t, "svc", "READY_AFTER_MS=200")},
		OnChange: func(supervisor.Status) { changes.Add(1) }})
	waitFor(t, "the service to start", func() bool { return r.status("svc").State == supervisor.Starting })
	if r.sup.Ready("svc") {
		t.Fatal("ready before its probe passed")
	}
	waitFor(t, "the service to be ready", func() bool { return r.sup.Ready("svc") })
	st := r.status("svc")
	if st.PID == 0 || st.PM2Status() != "online" || r.sup.PIDs()["svc"] != st.PID {
		t.Fatalf("ready status = %+v", st)
	}
	waitFor(t, "its output in the log ring", func() bool {
		lines, _ := r.sup.Logs("svc", 10)
		return len(lines) > 0 && strings.Contains(lines[0], fmt.Sprintf("pid %d", st.PID))
	})
	r.stop()
	if !processGone(st.PID) {
		t.Error("service still running after the supervisor stopped")
	}
	if r.status("svc").State != supervisor.Stopped || changes.Load() < 3 {
		t.Errorf("after stop: %+v, %d changes", r.status("svc"), changes.Load())
	}
}

func TestCrashLoopThenOperatorRestart(t *testing.T) {
	s := spec(t, "flaky", "CRASH_AFTER_MS=30")
	r := start(t, supervisor.Params{Specs: []supervisor.Spec{s}})
	waitFor(t, "a crash loop", func() bool { return r.status("flaky").State == supervisor.Errored })
	st := r.status("flaky")
	if st.Restarts != 3 || !strings.Contains(st.Error, "exit status 1") || st.PM2Status() != "errored" || st.PID != 0 {
		t.Fatalf("errored status = %+v; want 3 restarts, then errored with the exit in the message", st)
	}
	waitFor(t, "4 crashes in the log", func() bool {
		lines, _ := r.sup.Logs("flaky", 0)
		return strings.Count(strings.Join(lines, "\n"), "crashing as asked") == 4
	})
	if err := r.sup.Restart("flaky"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the operator's restart", func() bool { return r.status("flaky").State != supervisor.Errored })
}

func TestStopKillsAHungServiceAndItsGroup(t *testing.T) {
	s := spec(t, "stubborn", "IGNORE_TERM=1", "SPAWN_CHILD=1")
	s.StopGrace = 300 * time.Millisecond
	r := start(t, supervisor.Params{Specs: []supervisor.Spec{s}})
	waitFor(t, "ready", func() bool { return r.sup.Ready("stubborn") })
	pid := r.status("stubborn").PID
	var child int
	waitFor(t, "the child's pid in the log", func() bool {
		lines, _ := r.sup.Logs("stubborn", 0)
		for _, l := range lines {
			if _, err := fmt.Sscanf(l, "testservice child pid %d", &child); err == nil {
				return true
			}
		}
		return false
	})
	if err := r.sup.Stop("stubborn"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "stopped", func() bool { return r.status("stubborn").State == supervisor.Stopped })
	if !processGone(pid) || !processGone(child) {
		t.Errorf("after stop: service alive %v, child alive %v", !processGone(pid), !processGone(child))
	}
	if err := r.sup.Start("stubborn"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ready again", func() bool { return r.sup.Ready("stubborn") })
}

func TestNeverReadyIsNotReady(t *testing.T) {
	r := start(t, supervisor.Params{Specs: []supervisor.Spec{spec(t, "slow", "NEVER_READY=1")}})
	waitFor(t, "a probe failure recorded", func() bool { return strings.Contains(r.status("slow").Error, "503") })
	if r.sup.Ready("slow") || r.status("slow").State != supervisor.Starting {
		t.Errorf("status = %+v", r.status("slow"))
	}
}

func TestMemoryWatermarkRestartsBetweenJobs(t *testing.T) {
	s := spec(t, "leaky", "GROW_MB_PER_S=100")
	s.MemoryLimitMB = 40
	var busy atomic.Bool
	busy.Store(true)
	r := start(t, supervisor.Params{Specs: []supervisor.Spec{s}, MemoryEvery: 50 * time.Millisecond,
		Busy: func(string) bool { return busy.Load() }})
	waitFor(t, "the service to pass its watermark", func() bool { return r.status("leaky").RSSMB > 60 })
	if st := r.status("leaky"); st.Restarts != 0 {
		t.Fatalf("restarted while a job ran on it: %+v", st)
	}
	busy.Store(false)
	waitFor(t, "a restart between jobs", func() bool { return r.status("leaky").Restarts >= 1 })
	if st := r.status("leaky"); !strings.Contains(st.LastExit, "memory watermark") {
		t.Errorf("last exit = %q", st.LastExit)
	}
}

func TestMissingBinaryIsAClearError(t *testing.T) {
	s := spec(t, "ghost")
	s.Command = []string{"/nonexistent/comfyui"}
	r := start(t, supervisor.Params{Specs: []supervisor.Spec{s}})
	waitFor(t, "errored", func() bool { return r.status("ghost").State == supervisor.Errored })
	if e := r.status("ghost").Error; !strings.Contains(e, "not found") || !strings.Contains(e, "/nonexistent/comfyui") {
		t.Errorf("error = %q", e)
	}
	if err := r.sup.Restart("nope"); !errors.Is(err, supervisor.ErrUnknownService) || !strings.Contains(err.Error(), "ghost") {
		t.Errorf("unknown service: %v", err)
	}
}

// A machine that restarts finds its services still running and re-attaches to them: the same
// process, not a new one.
func TestAdoptionAfterRestart(t *testing.T) {
	runDir, logDir := t.TempDir(), t.TempDir()
	s := spec(t, "warm", "LOG_EVERY_MS=20")
	first := start(t, supervisor.Params{Specs: []supervisor.Spec{s}, RunDir: runDir, LogDir: logDir, KeepOnExit: true})
	waitFor(t, "ready", func() bool { return first.sup.Ready("warm") })
	pid := first.status("warm").PID
	first.stop()
	if processGone(pid) {
		t.Fatal("KeepOnExit stopped the service")
	}
	second := start(t, supervisor.Params{Specs: []supervisor.Spec{s}, RunDir: runDir, LogDir: logDir})
	waitFor(t, "ready after adoption", func() bool { return second.sup.Ready("warm") })
	if st := second.status("warm"); st.PID != pid || !st.Adopted {
		t.Fatalf("after restart: %+v, want pid %d adopted", st, pid)
	}
	waitFor(t, "new output in the ring", func() bool {
		lines, _ := second.sup.Logs("warm", 1)
		return len(lines) == 1 && strings.HasPrefix(lines[0], "tick")
	})
	// The adopted process dies: it is restarted as a new child.
	_ = syscall.Kill(pid, syscall.SIGKILL)
	waitFor(t, "a new instance", func() bool {
		st := second.status("warm")
		return st.State == supervisor.Ready && st.PID != pid && !st.Adopted
	})
	second.stop()
}

func TestLogRotation(t *testing.T) {
	logDir := t.TempDir()
	r := start(t, supervisor.Params{Specs: []supervisor.Spec{spec(t, "chatty", "LOG_EVERY_MS=1")}, LogDir: logDir,
		LogMaxBytes: 4000, LogKeep: 2, RingLines: 50})
	waitFor(t, "two rotations", func() bool {
		_, err := os.Stat(filepath.Join(logDir, "chatty.log.2"))
		return err == nil
	})
	if lines, _ := r.sup.Logs("chatty", 0); len(lines) != 50 {
		t.Errorf("ring holds %d lines, want its cap of 50", len(lines))
	}
	if _, err := os.Stat(filepath.Join(logDir, "chatty.log.3")); err == nil {
		t.Error("more rotated files kept than LogKeep")
	}
	if st, _ := os.Stat(filepath.Join(logDir, "chatty.log")); st.Size() > 20000 {
		t.Errorf("live log is %d bytes, cap 4000", st.Size())
	}
}

func TestAddAndRemoveWhileRunning(t *testing.T) {
	r := start(t, supervisor.Params{})
	waitFor(t, "the supervisor to run", func() bool { return r.sup.Add(spec(t, "probe-first")) == nil })
	waitFor(t, "the added service to be ready", func() bool { return r.sup.Ready("probe-first") })
	pid := r.status("probe-first").PID
	if err := r.sup.Add(spec(t, "probe-first")); err == nil {
		t.Error("a second service with the same name was accepted")
	}
	if err := r.sup.Remove("probe-first"); err != nil {
		t.Fatal(err)
	}
	if !processGone(pid) || len(r.sup.Names()) != 0 {
		t.Errorf("after remove: process gone %v, services %v", processGone(pid), r.sup.Names())
	}
	if err := r.sup.Remove("probe-first"); !errors.Is(err, supervisor.ErrUnknownService) {
		t.Errorf("removing twice: %v", err)
	}
}

// A service with a Credential runs as that user (the browser, when the machine is root).
func TestServiceRunsAsItsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root can start a process as another user")
	}
	s := supervisor.Spec{Name: "nobody", Command: []string{"/bin/sh", "-c", "id -u; exec sleep 60"}, GPU: -1, StopGrace: time.Second,
		Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	r := start(t, supervisor.Params{Specs: []supervisor.Spec{s}})
	waitFor(t, "the service to say who it is", func() bool {
		lines, _ := r.sup.Logs("nobody", 10)
		return len(lines) > 0
	})
	lines, _ := r.sup.Logs("nobody", 10)
	if !strings.Contains(lines[0], "65534") {
		t.Fatalf("the service ran as %q, want uid 65534", lines)
	}
}
