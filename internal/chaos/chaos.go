// Package chaos runs fault scenarios against a real redis-server and real `machine` processes
// and counts what happened to every job: submitted, completed, failed, lost, and executions
// beyond the one each job needs (duplicates). `make chaos` prints the table; a quick version
// runs in `make test`.
package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/internal/redistest"
	"github.com/emp-job-queue/machine/internal/testutil"
)

// Result is one scenario's count.
type Result struct {
	Scenario   string
	Submitted  int
	Completed  int
	Failed     int
	Lost       int // neither completed nor failed when the scenario ended
	Duplicates int // claims beyond one per job and retry
	Crashes    int // faults that could each re-run the jobs in flight
	Note       string
}

// Params size a run.
type Params struct {
	Machine string // the machine binary
	Dir     string // scratch space
	Jobs    int
	JobMS   int
}

// env is one scenario's world: a Redis, the machines, a claim counter.
type env struct {
	p      Params
	srv    *redistest.Server
	rdb    *redis.Client
	b      *broker.Broker
	ids    []string
	mu     sync.Mutex
	claims map[string]int
	stop   context.CancelFunc
	done   chan struct{}
	procs  []*testutil.Machine
}

func newEnv(p Params, name string) (*env, error) {
	dir := filepath.Join(p.Dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	srv, err := redistest.StartServer(dir)
	if err != nil {
		return nil, err
	}
	e := &env{p: p, srv: srv, claims: map[string]int{}, done: make(chan struct{})}
	e.rdb = srv.Client()
	e.b = broker.New(e.rdb)
	ctx, cancel := context.WithCancel(context.Background())
	e.stop = cancel
	ready := make(chan struct{})
	go e.countClaims(ctx, ready)
	<-ready
	return e, nil
}

// countClaims follows job_claimed, reconnecting across Redis restarts.
func (e *env) countClaims(ctx context.Context, ready chan struct{}) {
	defer close(e.done)
	once := sync.OnceFunc(func() { close(ready) })
	defer once()
	for ctx.Err() == nil {
		ps := e.rdb.Subscribe(ctx, broker.ChanClaimed)
		if _, err := ps.Receive(ctx); err == nil {
			once()
			for msg := range ps.Channel() {
				var m struct {
					JobID string `json:"job_id"`
				}
				if json.Unmarshal([]byte(msg.Payload), &m) == nil {
					e.mu.Lock()
					e.claims[m.JobID]++
					e.mu.Unlock()
				}
			}
		}
		ps.Close()
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *env) close() {
	e.stop()
	for _, m := range e.procs {
		m.Kill()
	}
	e.rdb.Close()
	e.srv.Stop()
	<-e.done
}

// port is a free TCP port, or 0 (any) when none can be had.
func port() int {
	p, _ := testutil.FreePort()
	return p
}

// machine starts a machine process with the given id and extra environment.
func (e *env) machine(id string, extra ...string) (*testutil.Machine, error) {
	run := filepath.Join(e.p.Dir, "run-"+id+"-"+strconv.Itoa(port()))
	env := append(os.Environ(), "HUB_REDIS_URL="+e.srv.URL, "MACHINE_ID="+id, "WORKER_CONNECTORS=simulation:2",
		"MACHINE_HEALTH_PORT=0", "MACHINE_RUN_DIR="+run, "LOG_LEVEL=warn", "MACHINE_LEASE_SECONDS=2",
		"WORKER_POLL_INTERVAL_MS=500", "WORKER_RETRY_BACKOFF_SECONDS=0", "MACHINE_DRAIN_TIMEOUT=1s")
	m, err := testutil.StartMachine(e.p.Machine, append(env, extra...))
	if err != nil {
		return nil, err
	}
	e.procs = append(e.procs, m)
	return m, nil
}

func (e *env) submit(n int) error {
	for range n {
		id, err := e.b.Submit(context.Background(), broker.JobSpec{Service: "simulation",
			Payload: json.RawMessage(fmt.Sprintf(`{"duration_ms":%d,"steps":4}`, e.p.JobMS))})
		if err != nil {
			return err
		}
		e.ids = append(e.ids, id)
	}
	return nil
}

func (e *env) status(id string) string {
	return e.rdb.HGet(context.Background(), broker.JobKey(id), "status").Val()
}

// settle waits until every job has an end (or the timeout), then counts.
func (e *env) settle(name string, crashes int, timeout time.Duration) Result {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		open := 0
		for _, id := range e.ids {
			if st := e.status(id); st != "completed" && st != "failed" {
				open++
			}
		}
		if open == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the last job_claimed messages
	r := Result{Scenario: name, Submitted: len(e.ids), Crashes: crashes}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range e.ids {
		switch e.status(id) {
		case "completed":
			r.Completed++
		case "failed":
			r.Failed++
		default:
			r.Lost++
		}
		retries, _ := strconv.Atoi(e.rdb.HGet(context.Background(), broker.JobKey(id), "retry_count").Val())
		if extra := e.claims[id] - 1 - retries; extra > 0 {
			r.Duplicates += extra
		}
	}
	return r
}

func (e *env) waitRunning(n int) {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		running := 0
		for _, id := range e.ids {
			if e.status(id) == "in_progress" {
				running++
			}
		}
		if running >= n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Run runs every scenario.
func Run(p Params) ([]Result, error) {
	scenarios := []struct {
		name string
		fn   func(p Params, name string) (Result, error)
	}{
		{"kill -9 mid-job", killMidJob},
		{"SIGTERM drain", sigtermDrain},
		{"Redis restart mid-job", redisRestart},
		{"service crash mid-job", serviceCrash},
		{"connector toggled under load", toggleUnderLoad},
	}
	var out []Result
	for _, s := range scenarios {
		r, err := s.fn(p, s.name)
		if err != nil {
			return out, fmt.Errorf("%s: %w", s.name, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// killMidJob: two machines share the work; one is killed with SIGKILL while it runs jobs.
// Its jobs' leases expire and the other machine runs them.
func killMidJob(p Params, name string) (Result, error) {
	e, err := newEnv(p, "kill")
	if err != nil {
		return Result{}, err
	}
	defer e.close()
	victim, err := e.machine("victim")
	if err != nil {
		return Result{}, err
	}
	if err := e.submit(p.Jobs); err != nil {
		return Result{}, err
	}
	e.waitRunning(2)
	var orphans []string
	for _, id := range e.ids {
		if e.status(id) == "in_progress" {
			orphans = append(orphans, id)
		}
	}
	victim.Kill() // kill -9 of the machine
	killed := time.Now()
	if _, err := e.machine("survivor"); err != nil {
		return Result{}, err
	}
	// How long until every job the dead machine held runs again elsewhere.
	var recovered time.Duration
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		left := 0
		for _, id := range orphans {
			w := e.rdb.HGet(context.Background(), broker.JobKey(id), "worker_id").Val()
			if st := e.status(id); st != "completed" && !strings.HasPrefix(w, "survivor-") {
				left++
			}
		}
		if left == 0 {
			recovered = time.Since(killed)
			break
		}
	}
	r := e.settle(name, 1, 90*time.Second)
	r.Note = fmt.Sprintf("%d orphaned jobs running again elsewhere %.1fs after the kill (lease 2s)", len(orphans), recovered.Seconds())
	return r, nil
}

// sigtermDrain: a machine is stopped with SIGTERM mid-job (drain timeout 1 s); its unfinished
// jobs go back to the queue and another machine finishes them.
func sigtermDrain(p Params, name string) (Result, error) {
	e, err := newEnv(p, "drain")
	if err != nil {
		return Result{}, err
	}
	defer e.close()
	first, err := e.machine("first")
	if err != nil {
		return Result{}, err
	}
	if err := e.submit(p.Jobs); err != nil {
		return Result{}, err
	}
	e.waitRunning(2)
	_ = first.Stop(time.Minute)
	if _, err := e.machine("second"); err != nil {
		return Result{}, err
	}
	return e.settle(name, 0, 90*time.Second), nil
}

// redisRestart: Redis saves, stops and starts again while jobs run.
func redisRestart(p Params, name string) (Result, error) {
	e, err := newEnv(p, "redis")
	if err != nil {
		return Result{}, err
	}
	defer e.close()
	if _, err := e.machine("steady", "MACHINE_LEASE_SECONDS=10"); err != nil {
		return Result{}, err
	}
	if err := e.submit(p.Jobs); err != nil {
		return Result{}, err
	}
	e.waitRunning(2)
	if err := e.srv.RestartKeepingData(); err != nil {
		return Result{}, err
	}
	return e.settle(name, 0, 90*time.Second), nil
}

// serviceCrash: the machine supervises a service; it is killed while jobs run and the
// supervisor restarts it; the jobs are not disturbed.
func serviceCrash(p Params, name string) (Result, error) {
	e, err := newEnv(p, "service")
	if err != nil {
		return Result{}, err
	}
	defer e.close()
	file := filepath.Join(p.Dir, "service", "services.json")
	pidFile := filepath.Join(p.Dir, "service", "sidecar.pid")
	def := fmt.Sprintf(`[{"name":"sidecar","command":["sh","-c","echo $$ > %s; exec sleep 3600"]}]`, pidFile)
	if err := os.WriteFile(file, []byte(def), 0o600); err != nil {
		return Result{}, err
	}
	if _, err := e.machine("host", "MACHINE_SERVICES_FILE="+file); err != nil {
		return Result{}, err
	}
	if err := e.submit(p.Jobs); err != nil {
		return Result{}, err
	}
	e.waitRunning(2)
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return Result{}, fmt.Errorf("the service did not start: %w", err)
	}
	pid, _ := strconv.Atoi(string(data[:len(data)-1]))
	_ = syscall.Kill(pid, syscall.SIGKILL)
	r := e.settle(name, 0, 90*time.Second)
	if now, err := os.ReadFile(pidFile); err != nil || string(now) == string(data) {
		r.Note = "the service was not restarted"
	} else {
		r.Note = "service restarted by the supervisor"
	}
	return r, nil
}

// toggleUnderLoad: while jobs run, the mock connector is disabled over the HTTP route (its
// running jobs drain), then enabled again, and the simulation slots are resized.
func toggleUnderLoad(p Params, name string) (Result, error) {
	e, err := newEnv(p, "toggle")
	if err != nil {
		return Result{}, err
	}
	defer e.close()
	port := port()
	if _, err := e.machine("toggler", "WORKER_CONNECTORS=simulation:2,mock:2", "MACHINE_API_TOKEN=chaos",
		"MACHINE_HEALTH_PORT="+strconv.Itoa(port)); err != nil {
		return Result{}, err
	}
	for range p.Jobs / 2 {
		id, err := e.b.Submit(context.Background(), broker.JobSpec{Service: "mock",
			Payload: json.RawMessage(fmt.Sprintf(`{"delay_ms":%d}`, p.JobMS))})
		if err != nil {
			return Result{}, err
		}
		e.ids = append(e.ids, id)
	}
	if err := e.submit(p.Jobs - p.Jobs/2); err != nil {
		return Result{}, err
	}
	e.waitRunning(2)
	post := func(query string) error {
		req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/connectors/%s", port, query), nil)
		req.Header.Set("Authorization", "Bearer chaos")
		for range 100 { // a change may be draining still: try again
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			time.Sleep(100 * time.Millisecond)
		}
		return fmt.Errorf("POST /connectors/%s kept failing", query)
	}
	for _, q := range []string{"mock?action=disable", "mock?action=enable&count=1", "simulation?action=concurrency&count=1",
		"simulation?action=concurrency&count=2"} {
		if err := post(q); err != nil {
			return Result{}, err
		}
	}
	return e.settle(name, 0, 90*time.Second), nil
}
