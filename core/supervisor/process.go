package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/emp-job-queue/machine/internal/safefs"
)

// pidRecord is what a pid file holds: enough to recognise the same process after the machine
// itself restarted (a pid alone may have been reused by then, or planted).
type pidRecord struct {
	PID        int       `json:"pid"`
	StartTicks uint64    `json:"start_ticks"` // /proc/<pid>/stat field 22
	SpecHash   string    `json:"spec_hash"`   // the command and environment it was started with
	Argv       []string  `json:"argv"`        // its command line, as started
	StartedAt  time.Time `json:"started_at"`
}

func writePidFile(path string, rec pidRecord) error {
	data, _ := json.Marshal(rec)
	tmp := path + ".tmp"
	f, err := safefs.CreateNew(tmp, 0o600)
	if err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	return os.Rename(tmp, path)
}

// readPidFile reads a pid file the machine's user wrote: a link, or a file another user owns,
// is not believed.
func readPidFile(path string) (pidRecord, error) {
	var rec pidRecord
	f, err := safefs.Open(path)
	if err != nil {
		return rec, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
			return rec, fmt.Errorf("pid file %s belongs to user %d, not to the machine's user; it is ignored", path, sys.Uid)
		}
	}
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return rec, fmt.Errorf("pid file %s is damaged: %w", path, err)
	}
	return rec, nil
}

// serviceMarker is set in every service's environment, so that a process named by a pid file
// can be recognised as a service a machine started (a planted pid file names another process).
const serviceMarker = "MACHINE_SERVICE"

// notTheService says why the process a pid file names is not that service, or returns nil when
// it is: the same start time (the pid was not reused), the leader of its own process group (we
// signal the group), run by the machine's user, with the command line recorded, and started by
// a machine as this service (its environment holds the marker). A pid file alone is never
// enough to make the machine signal a process.
func notTheService(rec pidRecord, name string) error {
	pid := rec.PID
	if pid <= 1 || pid == os.Getpid() {
		return fmt.Errorf("it names pid %d", pid)
	}
	st, err := readStat(pid)
	if err != nil || st.ticks != rec.StartTicks {
		return errGone
	}
	if st.pgrp != pid {
		return fmt.Errorf("pid %d does not lead its own process group", pid)
	}
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	if fi, err := os.Stat(dir); err != nil {
		return errGone
	} else if sys, ok := fi.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return fmt.Errorf("pid %d runs as user %d, not as the machine's user", pid, sys.Uid)
	}
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		return errGone
	}
	argv := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
	if len(rec.Argv) == 0 || !slices.Equal(argv, rec.Argv) {
		return fmt.Errorf("pid %d runs %q, not the command the pid file records", pid, strings.Join(argv, " "))
	}
	environ, err := os.ReadFile(filepath.Join(dir, "environ"))
	if err != nil {
		return fmt.Errorf("pid %d's environment cannot be read (%v)", pid, err)
	}
	if !slices.Contains(strings.Split(string(environ), "\x00"), serviceMarker+"="+name) {
		return fmt.Errorf("pid %d was not started by a machine as service %s", pid, name)
	}
	return nil
}

// errGone says the process a pid file names has ended (its pid may belong to another now).
var errGone = errors.New("the process has ended")

type procStat struct {
	ticks uint64 // start time, in clock ticks since boot
	pgrp  int
}

// readStat reads a live process's start time and process group from /proc/<pid>/stat.
func readStat(pid int) (procStat, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return procStat{}, errors.New("unreadable /proc stat")
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 20 {
		return procStat{}, errors.New("short /proc stat")
	}
	if f[0] == "Z" { // a zombie is gone
		return procStat{}, errors.New("process is a zombie")
	}
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, err
	}
	pgrp, err := strconv.Atoi(f[2])
	return procStat{ticks: ticks, pgrp: pgrp}, err
}

// startTicks reads when a process started, in clock ticks since boot.
func startTicks(pid int) (uint64, error) {
	st, err := readStat(pid)
	return st.ticks, err
}

// alive reports whether pid is still the process recorded with these start ticks.
func alive(pid int, ticks uint64) bool {
	t, err := startTicks(pid)
	return err == nil && t == ticks
}

// rssMB reads a process's resident memory.
func rssMB(pid int) (float64, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb / 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// signalGroup signals a service's whole process group (the service is its leader).
func signalGroup(pid int, sig syscall.Signal) error {
	return syscall.Kill(-pid, sig)
}

// groupAlive reports whether any process of the group is left.
func groupAlive(pid int) bool {
	return syscall.Kill(-pid, 0) == nil
}

// leftover deals with the instance a pid file says an earlier machine left running: adopted
// when it is this service as configured now, stopped when it is this service from an older
// configuration (it holds the port), and left alone, with a warning, when the pid file names a
// process that is not this service at all.
func (sv *service) leftover(ctx context.Context) *proc {
	rec, err := readPidFile(sv.pidPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	log := sv.sup.p.Log.With("service", sv.spec.Name)
	if err == nil {
		err = notTheService(rec, sv.spec.Name)
	}
	if err != nil {
		if !errors.Is(err, errGone) {
			log.Warn("the pid file names a process that is not this service; leaving that process alone and starting a new instance",
				"pid_file", sv.pidPath, "reason", err.Error())
		}
		_ = os.Remove(sv.pidPath)
		return nil
	}
	if rec.SpecHash == sv.hash {
		return sv.adopt(ctx, rec)
	}
	sv.terminate(&proc{pid: rec.PID, ticks: rec.StartTicks, adopted: true, done: make(chan string), stop: func() {}}, log)
	return nil
}

// adopt follows a process this machine did not start: it cannot wait for it, so it polls.
func (sv *service) adopt(ctx context.Context, rec pidRecord) *proc {
	pctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	p := &proc{pid: rec.PID, ticks: rec.StartTicks, adopted: true, done: make(chan string, 1), stop: stop}
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
				if !alive(p.pid, p.ticks) {
					p.done <- "exited (re-attached process; its exit status is not known)"
					return
				}
			}
		}
	}()
	return p
}
