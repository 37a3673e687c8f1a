package accounting_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/accounting"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/gpu"
)

// The test binary doubles as the service a job runs on, and as that service's child:
//
//	service  burns 800 ms of CPU before any job (not the job's), prints "ready", then on
//	         "work" starts a child and burns 100 ms; on "release" lets the child exit and
//	         reaps it (its CPU time then moves to the service's cutime)
//	child    touches 64 MiB, burns 150 ms, prints "done" and waits for its stdin to close
const helperEnv = "ACCOUNTING_TEST_PROCESS"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "service":
		serviceProcess()
		return
	case "child":
		childProcess()
		return
	}
	os.Exit(m.Run())
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// burn uses d of CPU time.
func burn(d time.Duration) {
	start := cpuTime()
	x := 0
	for cpuTime()-start < d {
		for i := range 100000 {
			x += i
		}
	}
	runtime.KeepAlive(x)
}

func serviceProcess() {
	burn(800 * time.Millisecond)
	fmt.Println("ready")
	var child *exec.Cmd
	var childIn io.WriteCloser
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "work":
			child = exec.Command(os.Args[0])
			child.Env = append(os.Environ(), helperEnv+"=child")
			childIn, _ = child.StdinPipe()
			out, _ := child.StdoutPipe()
			if err := child.Start(); err != nil {
				fmt.Println("error", err)
				continue
			}
			burn(100 * time.Millisecond)
			line, _ := bufio.NewReader(out).ReadString('\n')
			fmt.Println("worked", strings.TrimSpace(line))
		case "release":
			childIn.Close()
			_ = child.Wait()
			fmt.Println("released")
		}
	}
}

func childProcess() {
	mem := make([]byte, 64<<20)
	for i := 0; i < len(mem); i += 4096 {
		mem[i] = 1
	}
	burn(150 * time.Millisecond)
	fmt.Println("done")
	_, _ = io.ReadAll(os.Stdin)
	runtime.KeepAlive(mem)
}

// service is a running helper service.
type service struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startService(t *testing.T) *service {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=service")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &service{t: t, cmd: cmd, in: in, out: bufio.NewReader(out)}
	t.Cleanup(func() {
		in.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	s.expect("ready")
	return s
}

func (s *service) pid() int { return s.cmd.Process.Pid }

// do sends a command and waits for the answer that starts with want.
func (s *service) do(cmd, want string) {
	s.t.Helper()
	if _, err := fmt.Fprintln(s.in, cmd); err != nil {
		s.t.Fatal(err)
	}
	s.expect(want)
}

func (s *service) expect(want string) {
	s.t.Helper()
	line, err := s.out.ReadString('\n')
	if err != nil || len(line) < len(want) || line[:len(want)] != want {
		s.t.Fatalf("service said %q (%v), want %q", line, err, want)
	}
}

// clock is the accountant's and the fake GPUs' clock, moved by the test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

var base = time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)

func newClock() *clock { return &clock{t: base} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// at sets the clock to base + s seconds.
func (c *clock) at(s float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = base.Add(time.Duration(s * float64(time.Second)))
}

// rig is an accountant with fake GPUs whose activity the test sets.
type rig struct {
	t        *testing.T
	clock    *clock
	fake     *gpu.Fake
	acct     *accounting.Accountant
	activity map[int]float64
	// decorate changes a sample's readings before the accountant sees them (processes).
	decorate func([]gpu.Reading)
}

func newRig(t *testing.T, p accounting.Params) *rig {
	r := &rig{t: t, clock: newClock(), fake: gpu.NewFake(2, "Sim", 24), activity: map[int]float64{}}
	r.fake.SetClock(r.clock.Now)
	r.fake.SetActivity(func() map[int]float64 { return r.activity })
	p.Now = r.clock.Now
	r.acct = accounting.New(p)
	return r
}

// sample takes a sample of the fake GPUs at base + s seconds.
func (r *rig) sample(s float64) {
	r.clock.at(s)
	rs, err := r.fake.Read(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	if r.decorate != nil {
		r.decorate(rs)
	}
	r.acct.Observe(gpu.Snapshot{At: r.clock.Now(), GPUs: rs})
}

// claim opens a job's record through a slot, as core/worker does, at base + s seconds.
func (r *rig) claim(s float64, slot *accounting.Slot, j *job.Job) context.Context {
	r.clock.at(s)
	return slot.Claimed(context.Background(), j)
}

// finish closes it at base + s seconds and returns the result the final write would carry.
func (r *rig) finish(s float64, slot *accounting.Slot, ctx context.Context, j *job.Job, res job.Result) (job.Result, job.Resources) {
	r.clock.at(s)
	slot.Finished(ctx, j, &res)
	rec, ok := res.Metadata["resources"].(job.Resources)
	if res.Success && !ok {
		r.t.Fatalf("a successful result carries no metadata.resources: %+v", res.Metadata)
	}
	return res, rec
}
