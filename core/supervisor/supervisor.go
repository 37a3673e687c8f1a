// Package supervisor runs the machine's internal services (one ComfyUI per GPU, a browser, …)
// as child processes, in place of PM2: each in its own process group with its own environment,
// gated by a readiness probe, restarted with exponential backoff until a crash loop marks it
// errored, restarted between jobs when it outgrows its memory watermark, and stopped with
// SIGTERM then SIGKILL to the whole group. Its output goes to a rotated file and a ring of the
// last lines. A restarted machine re-attaches to the services it started (pid file plus the
// process's start time) instead of killing a warm ComfyUI.
//
//	          start/adopt          probe ok
//	stopped ───────────▶ starting ─────────▶ ready
//	   ▲                    │  ▲               │ exit
//	   │ stop               │  └── backoff ◀───┤ (Decide)
//	   └────────────────────┴────── errored ◀──┘ crash loop
package supervisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emp-job-queue/machine/internal/childenv"
	"github.com/emp-job-queue/machine/internal/safefs"
)

// State is a service's lifecycle state.
type State string

const (
	Stopped  State = "stopped"
	Starting State = "starting" // running, not ready yet
	Ready    State = "ready"
	Backoff  State = "backoff" // exited; waiting to restart
	Errored  State = "errored" // crash loop or cannot start; waits for the operator
)

// Spec is one service to run.
type Spec struct {
	Name          string
	Command       []string
	Dir           string
	Env           []string // on top of childenv.Base (PATH, HOME, LANG, proxies…); the machine's secrets are not passed on
	Port          int
	GPU           int // -1 when not bound
	Probe         Probe
	Policy        Policy
	MemoryLimitMB float64       // restart between jobs above this RSS; 0: no watermark
	StopGrace     time.Duration // SIGTERM → SIGKILL; default 10 s
	// Credential runs the service as another user (the machine runs as root and the service
	// should not: the browser); nil runs it as the machine's user.
	Credential *syscall.Credential
}

// Status is how a service is now.
type Status struct {
	Name      string
	State     State
	PID       int
	Restarts  int
	StartedAt time.Time
	Port      int
	GPU       int
	Adopted   bool   // re-attached after a machine restart
	LastExit  string // how the last run ended
	Error     string // why it is errored or not ready
	RSSMB     float64
	// For the console's describe view: the command line, the probe, and the latest exits
	// (newest last, at most maxExits).
	Command []string
	Probe   string
	Exits   []Exit
}

// Exit is one end of a service's process and what the supervisor made of it.
type Exit struct {
	At     time.Time
	Reason string
}

const maxExits = 10

// exited records an exit in the status's history; the slice is copied, never shared.
func (s *Status) exited(reason string) {
	s.LastExit = reason
	s.Exits = append(slices.Clone(s.Exits[max(0, len(s.Exits)-maxExits+1):]), Exit{At: time.Now(), Reason: reason})
}

// PM2Status is the state in the old runtime's words, for the monitor's pm2_status.
func (s Status) PM2Status() string {
	switch s.State {
	case Ready:
		return "online"
	case Starting, Backoff:
		return "launching"
	case Errored:
		return "errored"
	default:
		return "stopped"
	}
}

// ErrUnknownService is returned for a name the supervisor does not run.
var ErrUnknownService = errors.New("unknown service")

// Params builds a Supervisor. Every field is immutable after New.
type Params struct {
	Specs       []Spec
	RunDir      string // pid files go to RunDir/services
	LogDir      string // name.log, rotated to name.log.1 …
	Busy        func(service string) bool
	OnChange    func(Status)
	Log         *slog.Logger
	MemoryEvery time.Duration // RSS check period; default 5 s
	LogMaxBytes int64         // default 10 MiB
	LogKeep     int           // rotated files kept; default 3
	RingLines   int           // lines kept in memory; default 10,000
	KeepOnExit  bool          // leave services running when Run ends, for the next machine to adopt
}

// Supervisor runs a set of services.
type Supervisor struct {
	p Params

	mu       sync.Mutex
	services map[string]*service
	order    []string
	runCtx   context.Context // set by Run: services added later run under it
	wg       sync.WaitGroup
}

// New prepares the services; Run starts them.
func New(p Params) (*Supervisor, error) {
	if p.Log == nil {
		p.Log = slog.New(slog.DiscardHandler)
	}
	if p.MemoryEvery <= 0 {
		p.MemoryEvery = 5 * time.Second
	}
	if p.LogMaxBytes <= 0 {
		p.LogMaxBytes = 10 << 20
	}
	if p.LogKeep <= 0 {
		p.LogKeep = 3
	}
	if p.RingLines <= 0 {
		p.RingLines = 10000
	}
	if p.Busy == nil {
		p.Busy = func(string) bool { return false }
	}
	// Pid files and logs decide what the machine signals and shows: only its user may write there.
	for _, d := range []struct{ dir, setting string }{
		{p.RunDir, "MACHINE_RUN_DIR"}, {filepath.Join(p.RunDir, "services"), "MACHINE_RUN_DIR/services"}, {p.LogDir, "MACHINE_LOG_DIR"},
	} {
		if err := safefs.Dir(d.dir, d.setting, 0o755); err != nil {
			return nil, err
		}
	}
	s := &Supervisor{p: p, services: map[string]*service{}}
	for _, spec := range p.Specs {
		if _, err := s.add(spec); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// add registers a service; the caller holds mu or owns s alone.
func (s *Supervisor) add(spec Spec) (*service, error) {
	if spec.Name == "" || len(spec.Command) == 0 {
		return nil, fmt.Errorf("service %q needs a name and a command", spec.Name)
	}
	if _, dup := s.services[spec.Name]; dup {
		return nil, fmt.Errorf("service %q is defined twice", spec.Name)
	}
	if spec.Policy == (Policy{}) {
		spec.Policy = DefaultPolicy
	}
	if spec.StopGrace <= 0 {
		spec.StopGrace = 10 * time.Second
	}
	if spec.Probe.Every <= 0 {
		spec.Probe.Every = 500 * time.Millisecond
	}
	sv := &service{
		spec: spec, sup: s, cmds: make(chan command, 4), ring: newRing(s.p.RingLines), done: make(chan struct{}),
		pidPath: filepath.Join(s.p.RunDir, "services", spec.Name+".pid"),
		logPath: filepath.Join(s.p.LogDir, spec.Name+".log"),
		status: Status{Name: spec.Name, State: Stopped, Port: spec.Port, GPU: spec.GPU,
			Command: slices.Clone(spec.Command), Probe: spec.Probe.String()},
	}
	sv.hash = specHash(spec)
	s.services[spec.Name] = sv
	s.order = append(s.order, spec.Name)
	return sv, nil
}

// Add starts a service while the supervisor runs (a connector enabled live).
func (s *Supervisor) Add(spec Spec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runCtx == nil {
		return fmt.Errorf("the supervisor is not running")
	}
	sv, err := s.add(spec)
	if err != nil {
		return err
	}
	ctx := s.runCtx
	s.wg.Go(func() { sv.run(ctx) })
	return nil
}

// Remove stops a service for good and forgets it (no connector needs it any more).
func (s *Supervisor) Remove(name string) error {
	sv, err := s.get(name)
	if err != nil {
		return err
	}
	sv.cmds <- cmdRemove
	<-sv.done
	s.mu.Lock()
	delete(s.services, name)
	s.order = slices.DeleteFunc(s.order, func(n string) bool { return n == name })
	s.mu.Unlock()
	return nil
}

func specHash(s Spec) string {
	h := sha256.New()
	fmt.Fprintf(h, "%q %q %q %d", s.Command, s.Dir, s.Env, s.Port)
	if c := s.Credential; c != nil {
		fmt.Fprintf(h, " uid=%d gid=%d", c.Uid, c.Gid)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Run starts every service and supervises them until ctx ends; then it stops them (or, with
// KeepOnExit, leaves them running for the next machine to adopt) and returns.
func (s *Supervisor) Run(ctx context.Context) {
	s.mu.Lock()
	s.runCtx = ctx
	for _, name := range s.order {
		sv := s.services[name]
		s.wg.Go(func() { sv.run(ctx) })
	}
	s.mu.Unlock()
	<-ctx.Done()
	s.wg.Wait()
}

func (s *Supervisor) get(name string) (*service, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv, ok := s.services[name]
	if !ok {
		return nil, fmt.Errorf("%w %q: this machine runs %s", ErrUnknownService, name, s.names())
	}
	return sv, nil
}

func (s *Supervisor) names() string {
	if len(s.order) == 0 {
		return "no services"
	}
	return strings.Join(s.order, ", ")
}

// Ready reports whether a service is ready; slots bound to it claim only then.
func (s *Supervisor) Ready(name string) bool {
	sv, err := s.get(name)
	return err == nil && sv.snapshot().State == Ready
}

// Statuses returns every service's status, in plan order.
func (s *Supervisor) Statuses() []Status {
	s.mu.Lock()
	svcs := make([]*service, 0, len(s.order))
	for _, name := range s.order {
		svcs = append(svcs, s.services[name])
	}
	s.mu.Unlock()
	out := make([]Status, 0, len(svcs))
	for _, sv := range svcs {
		out = append(out, sv.snapshot())
	}
	return out
}

// PIDs maps running services to their pids, for the host sampler.
func (s *Supervisor) PIDs() map[string]int {
	out := map[string]int{}
	for _, st := range s.Statuses() {
		if st.PID > 0 {
			out[st.Name] = st.PID
		}
	}
	return out
}

// Logs returns a service's last n lines (all kept lines when n ≤ 0).
func (s *Supervisor) Logs(name string, n int) ([]string, error) {
	sv, err := s.get(name)
	if err != nil {
		return nil, err
	}
	return sv.ring.last(n), nil
}

// Restart restarts a service now (an errored one too), resetting its crash count.
func (s *Supervisor) Restart(name string) error { return s.send(name, cmdRestart) }

// Stop stops a service and keeps it stopped.
func (s *Supervisor) Stop(name string) error { return s.send(name, cmdStop) }

// Start starts a stopped or errored service.
func (s *Supervisor) Start(name string) error { return s.send(name, cmdStart) }

func (s *Supervisor) send(name string, c command) error {
	sv, err := s.get(name)
	if err != nil {
		return err
	}
	select {
	case sv.cmds <- c:
		return nil
	default:
		return fmt.Errorf("service %q is busy with earlier commands; try again", name)
	}
}

type command int

const (
	cmdRestart command = iota + 1
	cmdStop
	cmdStart
	cmdRemove // stop for good and end the service's loop
)

// service is one supervised service; its run loop is the only writer of its process.
type service struct {
	spec    Spec
	sup     *Supervisor
	hash    string
	cmds    chan command
	ring    *ring
	pidPath string
	logPath string
	done    chan struct{} // closed when run returns

	mu     sync.Mutex
	status Status
}

func (sv *service) snapshot() Status {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	return sv.status
}

func (sv *service) set(fn func(*Status)) {
	sv.mu.Lock()
	fn(&sv.status)
	st := sv.status
	sv.mu.Unlock()
	if sv.sup.p.OnChange != nil {
		sv.sup.p.OnChange(st)
	}
}

// proc is a running instance: our child, or a process adopted from an earlier machine.
type proc struct {
	pid     int
	ticks   uint64
	adopted bool
	done    chan string // how it ended
	stop    context.CancelFunc
}

func (sv *service) run(ctx context.Context) {
	defer close(sv.done)
	log := sv.sup.p.Log.With("service", sv.spec.Name)
	lf, _, err := openLog(sv.logPath, sv.sup.p.LogMaxBytes, sv.sup.p.LogKeep, sv.ring)
	if err != nil {
		sv.set(func(s *Status) { s.State, s.Error = Errored, err.Error() })
		log.Error("service cannot log; not started", "err", err)
		return
	}
	tailCtx, stopTail := context.WithCancel(context.WithoutCancel(ctx))
	var tail sync.WaitGroup
	tail.Go(func() { sv.tail(tailCtx, lf) })
	defer func() { stopTail(); tail.Wait(); _ = lf.poll() }()

	want, ok := true, true // the operator's wish: running or stopped
	consecutive := 0
	for {
		if !want {
			sv.set(func(s *Status) { s.State, s.PID = Stopped, 0 })
			if want, ok = sv.next(ctx); !ok {
				return
			}
			consecutive = 0
			continue
		}
		p, err := sv.launch(ctx)
		if err != nil {
			sv.set(func(s *Status) { s.State, s.PID, s.Error = Errored, 0, err.Error() })
			log.Error("service cannot start", "err", err)
			if want, ok = sv.next(ctx); !ok {
				return
			}
			consecutive = 0
			continue
		}
		if p.adopted {
			log.Info("re-attached to the running service started by an earlier machine", "pid", p.pid)
		}
		started := time.Now()
		sv.set(func(s *Status) {
			s.State, s.PID, s.Adopted, s.StartedAt, s.Error = Starting, p.pid, p.adopted, started, ""
		})
		ended, exit, c := sv.watch(ctx, p, log)
		switch {
		case ctx.Err() != nil:
			if sv.sup.p.KeepOnExit {
				p.stop()
				log.Info("leaving the service running for the next machine to adopt", "pid", p.pid)
				return
			}
			sv.terminate(p, log)
			sv.set(func(s *Status) { s.State, s.PID = Stopped, 0; s.exited("stopped with the machine") })
			return
		case !ended: // a command or the memory watermark
			sv.terminate(p, log)
			if c == cmdRemove {
				sv.set(func(s *Status) { s.State, s.PID = Stopped, 0; s.exited("removed") })
				return
			}
			sv.set(func(s *Status) { s.Restarts++; s.exited(exit) })
			consecutive = 0
			want = c != cmdStop
			continue
		}
		d := Decide(sv.spec.Policy, consecutive, started, time.Now(), exit)
		consecutive = d.Consecutive
		sv.killLeftovers(p)
		if !d.Restart {
			log.Error("service is crash-looping; not restarting it", "reason", d.Message)
			sv.set(func(s *Status) { s.State, s.PID, s.Error = Errored, 0, d.Message; s.exited(exit) })
			if want, ok = sv.next(ctx); !ok {
				return
			}
			consecutive = 0
			continue
		}
		log.Warn("service exited", "exit", exit, "restart_in", d.Delay.String(), "in_a_row", d.Consecutive)
		sv.set(func(s *Status) {
			s.State, s.PID, s.Error, s.Restarts = Backoff, 0, d.Message, s.Restarts+1
			s.exited(exit)
		})
		select {
		case <-ctx.Done():
			return
		case <-time.After(d.Delay):
		case c := <-sv.cmds:
			if c == cmdRemove {
				return
			}
			want = c != cmdStop
			consecutive = 0
		}
	}
}

// next waits for the operator's command while the service does not run, and says whether it
// should run; ok is false when the service's loop ends (the machine stops, or the service is
// removed).
func (sv *service) next(ctx context.Context) (want, ok bool) {
	c, ok := sv.await(ctx)
	if !ok || c == cmdRemove {
		sv.set(func(s *Status) { s.State, s.PID = Stopped, 0 })
		return false, false
	}
	return c != cmdStop, true
}

// await waits for the operator's next command; false when ctx ends first.
func (sv *service) await(ctx context.Context) (command, bool) {
	select {
	case <-ctx.Done():
		return 0, false
	case c := <-sv.cmds:
		return c, true
	}
}

// watch follows a running instance until it exits (ended), a command arrives, the memory
// watermark calls for a restart between jobs, or ctx ends.
func (sv *service) watch(ctx context.Context, p *proc, log *slog.Logger) (ended bool, exit string, c command) {
	probe := time.NewTicker(sv.spec.Probe.Every)
	defer probe.Stop()
	mem := time.NewTicker(sv.sup.p.MemoryEvery)
	defer mem.Stop()
	ready := false
	for {
		select {
		case <-ctx.Done():
			return false, "", 0
		case exit := <-p.done:
			return true, exit, 0
		case c := <-sv.cmds:
			if c == cmdStart {
				continue // already running
			}
			return false, map[command]string{cmdRestart: "restarted by the operator", cmdStop: "stopped by the operator", cmdRemove: "removed"}[c], c
		case <-probe.C:
			err := sv.spec.Probe.check(ctx)
			switch {
			case err == nil && !ready:
				ready = true
				probe.Reset(readyProbeEvery) // ready: a slower liveness check is enough
				log.Info("service ready", "pid", p.pid, "port", sv.spec.Port)
				sv.set(func(s *Status) { s.State, s.Error = Ready, "" })
			case err != nil && ready:
				ready = false
				probe.Reset(sv.spec.Probe.Every)
				sv.set(func(s *Status) { s.State, s.Error = Starting, "readiness probe fails: "+err.Error() })
			case err != nil:
				sv.set(func(s *Status) { s.Error = "not ready yet: " + err.Error() })
			}
		case <-mem.C:
			rss, err := rssMB(p.pid)
			if err != nil {
				continue
			}
			sv.set(func(s *Status) { s.RSSMB = rss })
			if limit := sv.spec.MemoryLimitMB; limit > 0 && rss > limit {
				if sv.sup.p.Busy(sv.spec.Name) {
					log.Warn("service is over its memory watermark; restarting it after the running job", "rss_mb", int(rss), "limit_mb", int(limit))
					continue
				}
				log.Warn("service is over its memory watermark; restarting it between jobs", "rss_mb", int(rss), "limit_mb", int(limit))
				return false, fmt.Sprintf("memory watermark: RSS %.0f MB over %.0f MB", rss, limit), cmdRestart
			}
		}
	}
}

// readyProbeEvery spaces the probes of a ready service: frequent probes only matter while it
// starts, and each one costs the machine CPU.
const readyProbeEvery = 5 * time.Second

// launch adopts the instance an earlier machine left running, or starts a new one.
func (sv *service) launch(ctx context.Context) (*proc, error) {
	if p := sv.leftover(ctx); p != nil {
		return p, nil
	}
	bin, err := exec.LookPath(sv.spec.Command[0])
	if err != nil {
		return nil, fmt.Errorf("cannot start %s: command %q not found (%v); install it or fix the service's command", sv.spec.Name, sv.spec.Command[0], err)
	}
	out, err := safefs.Append(sv.logPath)
	if err != nil {
		return nil, fmt.Errorf("cannot start %s: its log: %w", sv.spec.Name, err)
	}
	defer out.Close()
	cmd := exec.Command(bin, sv.spec.Command[1:]...)
	cmd.Dir = sv.spec.Dir
	cmd.Env = childenv.Base(append(slices.Clone(sv.spec.Env), serviceMarker+"="+sv.spec.Name)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: sv.spec.Credential}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start %s: %w", sv.spec.Name, err)
	}
	ticks, _ := startTicks(cmd.Process.Pid)
	if err := writePidFile(sv.pidPath, pidRecord{PID: cmd.Process.Pid, StartTicks: ticks, SpecHash: sv.hash, Argv: cmd.Args, StartedAt: time.Now()}); err != nil {
		sv.sup.p.Log.Warn("pid file not written; a restarted machine will not re-attach to this service", "service", sv.spec.Name, "err", err)
	}
	p := &proc{pid: cmd.Process.Pid, ticks: ticks, done: make(chan string, 1), stop: func() {}}
	go func() {
		err := cmd.Wait()
		exit := "exit status 0"
		if err != nil {
			exit = err.Error()
		}
		p.done <- exit
	}()
	return p, nil
}

// terminate stops an instance: SIGTERM to its group, SIGKILL after the grace period.
func (sv *service) terminate(p *proc, log *slog.Logger) {
	defer p.stop()
	_ = signalGroup(p.pid, syscall.SIGTERM)
	if !sv.waitGone(p, sv.spec.StopGrace) {
		log.Warn("service ignored SIGTERM; killing its process group", "service", sv.spec.Name, "pid", p.pid, "grace", sv.spec.StopGrace.String())
		_ = signalGroup(p.pid, syscall.SIGKILL)
		sv.waitGone(p, 5*time.Second)
	}
	sv.killLeftovers(p)
	_ = os.Remove(sv.pidPath)
}

// killLeftovers kills whatever the service left in its process group after it ended.
func (sv *service) killLeftovers(p *proc) {
	if groupAlive(p.pid) {
		_ = signalGroup(p.pid, syscall.SIGKILL)
	}
}

func (sv *service) waitGone(p *proc, d time.Duration) bool {
	deadline := time.After(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			return true
		case <-tick.C:
			if p.adopted && !alive(p.pid, p.ticks) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// tail copies the service's log file into its ring until ctx ends.
func (sv *service) tail(ctx context.Context, lf *logFile) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if st, err := os.Lstat(lf.path); err == nil && st.Size() == lf.offset {
				continue // nothing new: skip the open and read
			}
			if err := lf.poll(); err != nil && !errors.Is(err, os.ErrNotExist) {
				sv.sup.p.Log.Debug("service log not read", "service", sv.spec.Name, "err", err)
			}
		}
	}
}

// Names returns the services' names in plan order.
func (s *Supervisor) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.order)
}
