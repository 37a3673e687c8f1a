// Command bench measures the machine end to end against a real redis-server it starts itself,
// and prints one table: medians and percentiles, each next to a baseline measured in the same
// run. `make bench` runs it. These machines are shared and noisy: read ratios, not absolutes.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/metrics"
	"github.com/emp-job-queue/machine/gpu"
	"github.com/emp-job-queue/machine/internal/redistest"
	"github.com/emp-job-queue/machine/internal/testutil"
)

type row struct {
	metric, value, baseline, ratio, goal string
}

func main() {
	bin := flag.String("machine", "bin/machine", "the machine binary to measure")
	samples := flag.Int("samples", 200, "pickup latency samples")
	jobs := flag.Int("jobs", 20000, "jobs per throughput run")
	idleConsole := flag.String("idle-console", "", "internal: run an attached console on this socket for 45 s")
	idleInterval := flag.Duration("idle-interval", 0, "internal: the idle console's reading interval")
	only := flag.String("only", "", "comma-separated sections to run: "+strings.Join(sections, ", ")+" (default: all)")
	flag.Parse()
	if *idleConsole != "" {
		if err := runIdleConsole(*idleConsole, *idleInterval); err != nil {
			fmt.Fprintln(os.Stderr, "bench console:", err)
			os.Exit(1)
		}
		return
	}
	want, err := pick(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if err := run(*bin, *samples, *jobs, want); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// sections are the parts of the bench -only can pick.
var sections = []string{"pickup", "throughput", "claim", "services", "console", "sampler", "accounting", "install"}

// pick returns which sections to run.
func pick(only string) (func(string) bool, error) {
	if only == "" {
		return func(string) bool { return true }, nil
	}
	chosen := map[string]bool{}
	for _, s := range strings.Split(only, ",") {
		if !slices.Contains(sections, s) {
			return nil, fmt.Errorf("-only: no section %q; the sections are %s", s, strings.Join(sections, ", "))
		}
		chosen[s] = true
	}
	return func(s string) bool { return chosen[s] }, nil
}

func run(bin string, samples, jobs int, want func(string) bool) error {
	dir, err := os.MkdirTemp("", "machine-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := redistest.StartServer(dir)
	if err != nil {
		return err
	}
	defer srv.Stop()
	rdb := srv.Client()
	defer rdb.Close()
	ctx := context.Background()
	b := broker.New(rdb)
	var rows []row

	if want("pickup") {
		fmt.Fprintln(os.Stderr, "pickup latency: machine (wake on job_submitted) …")
		m, err := startMachine(bin, dir, srv.URL, "mock:4")
		if err != nil {
			return err
		}
		fast, err := pickup(ctx, b, rdb, samples, 5*time.Millisecond)
		m.stop()
		if err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "pickup latency: baseline (4 workers polling every 1 s, the old runtime) …")
		stopPollers := pollers(ctx, b, 4, time.Second)
		slow, err := pickup(ctx, b, rdb, max(samples/5, 20), 0)
		stopPollers()
		if err != nil {
			return err
		}
		rows = append(rows,
			latencyRow("enqueue→claim p50, idle slots", fast, slow, 0.5, "≤ 2 ms"),
			latencyRow("enqueue→claim p99, idle slots", fast, slow, 0.99, ""),
		)
	}

	if want("throughput") {
		fmt.Fprintln(os.Stderr, "throughput: no-op jobs, 8 slots, 3 runs …")
		var rates []float64
		var mem memory // of the run with the most RSS
		for range 3 {
			r, m, err := throughput(ctx, b, rdb, bin, dir, srv.URL, jobs, srv.Pid())
			if err != nil {
				return err
			}
			rates = append(rates, r)
			if m.rss > mem.rss {
				mem = m
			}
		}
		rows = append(rows, row{"no-op job lifecycle, 8 slots (median of 3)", fmt.Sprintf("%.0f jobs/s", median(rates)),
			fmt.Sprintf("runs %s", fmtRates(rates)), "", "≥ 5000 jobs/s"},
			row{"headless core RSS, 8 slots, after the runs", fmt.Sprintf("%.1f MB", mb(mem.rss)),
				fmt.Sprintf("its own (RssAnon) %.1f MB; its binary in 2 MB pages %.1f MB", mb(mem.anon), mb(mem.fileHuge)), "", "≤ 30 MB"})
	}

	if want("claim") {
		claimRows, err := claimBench(ctx, b, rdb)
		if err != nil {
			return err
		}
		rows = append(rows, claimRows...)
	}

	if want("services") {
		fmt.Fprintln(os.Stderr, "supervised services: start to ready, overhead per service …")
		svcRows, err := serviceBench(bin, dir, srv.URL)
		if err != nil {
			return err
		}
		rows = append(rows, svcRows...)
	}

	if want("console") {
		fmt.Fprintln(os.Stderr, "console: frame time and idle CPU …")
		consoleRows, err := consoleBench(bin, dir, srv.URL)
		if err != nil {
			return err
		}
		rows = append(rows, consoleRows...)
	}

	if want("sampler") {
		fmt.Fprintln(os.Stderr, "GPU sampler cost at 8 GPUs …")
		tick, gpuOnly := samplerCost(ctx)
		rows = append(rows, row{"GPU sampler at 1 Hz, 8 GPUs (fake) + host + gauges", fmt.Sprintf("%.3f %% of a core", tick.Seconds()*100),
			fmt.Sprintf("%.1f µs a tick (GPU reads alone)", float64(gpuOnly.Nanoseconds())/1000), fmt.Sprintf("%.0f µs CPU a tick", float64(tick.Microseconds())), "< 0.5 % of a core"})
	}

	if want("accounting") {
		fmt.Fprintln(os.Stderr, "job accounting cost at 8 GPUs and 32 slots …")
		acctRow, err := accountingBench()
		if err != nil {
			return err
		}
		rows = append(rows, acctRow)
	}

	if want("install") {
		fmt.Fprintln(os.Stderr, "install: full stack from local sources, fresh and re-run …")
		installRows, err := installBench(bin, dir)
		if err != nil {
			return err
		}
		rows = append(rows, installRows...)
	}

	return printRows(rows)
}

func printRows(rows []row) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "METRIC\tVALUE\tBASELINE (same run)\tRATIO\tGOAL")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.metric, r.value, r.baseline, r.ratio, r.goal)
	}
	return tw.Flush()
}

// machineProc is a running `machine --no-tui`.
type machineProc struct{ *testutil.Machine }

func startMachine(bin, dir, url, connectors string, extraEnv ...string) (*machineProc, error) {
	env := append(os.Environ(), "HUB_REDIS_URL="+url, "WORKER_CONNECTORS="+connectors, "MACHINE_ID=bench",
		"MACHINE_RUN_DIR="+filepath.Join(dir, "run"), "LOG_LEVEL=warn")
	m, err := testutil.StartMachine(bin, append(env, extraEnv...))
	if err != nil {
		return nil, err
	}
	if err := m.WaitReady(20 * time.Second); err != nil {
		m.Kill()
		return nil, err
	}
	return &machineProc{m}, nil
}

// cpuTicks is a process's user+system CPU time in clock ticks.
func cpuTicks(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return u + k
}

func (m *machineProc) rssKB() int64 { return m.memory().rss }

// memory is what a process holds in memory, in kB.
type memory struct {
	rss  int64 // VmRSS: everything resident
	anon int64 // RssAnon: its own memory (heap, stacks)
	// fileHuge is the part of rss that is the binary's own file mapped in 2 MB pages
	// (FilePmdMapped): where the kernel collapses an executable's text into huge pages, each
	// counts whole, shared with the page cache, and moves rss by megabytes from one build to
	// the next without the process using any more memory.
	fileHuge int64
}

func (m *machineProc) memory() memory {
	pid := m.Cmd.Process.Pid
	field := func(file, name string) int64 {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
		if err != nil {
			return 0
		}
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == name {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb
			}
		}
		return 0
	}
	return memory{rss: field("status", "VmRSS:"), anon: field("status", "RssAnon:"), fileHuge: field("smaps_rollup", "FilePmdMapped:")}
}

func mb(kb int64) float64 { return float64(kb) / 1024 }

func (m *machineProc) stop() { _ = m.Stop(15 * time.Second) }

// pickup submits jobs one at a time to idle workers and returns each job's enqueue→claim time:
// from just before the submit to the claim's own timestamp (assigned_at, Redis's clock, which
// is this host's clock).
func pickup(ctx context.Context, b *broker.Broker, rdb *redis.Client, n int, gap time.Duration) ([]time.Duration, error) {
	ps := rdb.Subscribe(ctx, broker.ChanClaimed)
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		return nil, err
	}
	ch := ps.Channel()
	var out []time.Duration
	for range n {
		t0 := time.Now()
		id, err := b.Submit(ctx, broker.JobSpec{Service: "mock", Payload: []byte(`{"delay_ms":0}`)})
		if err != nil {
			return nil, err
		}
		if err := waitClaimed(ch, id); err != nil {
			return nil, err
		}
		at, err := parseSecMicros(rdb.HGet(ctx, broker.JobKey(id), "assigned_at").Val())
		if err != nil {
			return nil, err
		}
		out = append(out, at.Sub(t0))
		time.Sleep(gap)
	}
	return out, nil
}

func waitClaimed(ch <-chan *redis.Message, id string) error {
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-ch:
			if strings.Contains(m.Payload, id) {
				return nil
			}
		case <-timeout:
			return fmt.Errorf("job %s was not claimed within 10 s", id)
		}
	}
}

func parseSecMicros(s string) (time.Time, error) {
	sec, micros, ok := strings.Cut(s, ".")
	if !ok {
		return time.Time{}, fmt.Errorf("assigned_at %q is not sec.micros", s)
	}
	a, err1 := strconv.ParseInt(sec, 10, 64)
	c, err2 := strconv.ParseInt(micros, 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, fmt.Errorf("assigned_at %q is not sec.micros", s)
	}
	return time.Unix(a, c*1000), nil
}

// pollers emulates the old runtime's workers: each claims every interval (the old
// WORKER_POLL_INTERVAL_MS), at a random phase, and completes what it claims at once.
func pollers(ctx context.Context, b *broker.Broker, n int, interval time.Duration) func() {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range n {
		id := fmt.Sprintf("baseline-worker-mock-%d", i)
		caps, _ := broker.Capabilities{WorkerID: id, Services: []string{"mock"}}.Encode()
		wg.Go(func() {
			time.Sleep(time.Duration(rand.Int64N(int64(interval))))
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				if j, _, err := b.Claim(ctx, caps, 100, 0); err == nil && j != nil {
					_ = b.Complete(ctx, j, id, jobResult())
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}

// throughput preloads jobs, starts a machine with 8 slots, and measures the completion rate
// between 10 % and 90 % of the jobs (steady state, start-up excluded). It returns jobs/s and
// the machine's RSS afterwards.
func throughput(ctx context.Context, b *broker.Broker, rdb *redis.Client, bin, dir, url string, n, redisPid int) (float64, memory, error) {
	if err := rdb.FlushAll(ctx).Err(); err != nil { // our own server
		return 0, memory{}, err
	}
	const batch = 500
	for i := 0; i < n; i += batch {
		pipe := rdb.Pipeline()
		now := broker.ISO(time.Now())
		for k := i; k < min(i+batch, n); k++ {
			id := fmt.Sprintf("tp-%d", k)
			pipe.HSet(ctx, broker.JobKey(id), "id", id, "service_required", "mock", "priority", "50",
				"payload", `{"delay_ms":0}`, "requirements", "", "created_at", now, "status", "pending",
				"retry_count", "0", "max_retries", "3")
			pipe.ZAdd(ctx, broker.KeyPending, redis.Z{Score: float64(50e15 - k), Member: id})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return 0, memory{}, err
		}
	}
	m, err := startMachine(bin, dir, url, "mock:8")
	if err != nil {
		return 0, memory{}, err
	}
	defer m.stop()
	lo, hi := int64(n/10), int64(n*9/10)
	var tLo, tHi time.Time
	deadline := time.Now().Add(5 * time.Minute)
	for tHi.IsZero() {
		done := rdb.HLen(ctx, broker.KeyCompleted).Val()
		now := time.Now()
		if tLo.IsZero() && done >= lo {
			tLo = now
		}
		if done >= hi {
			tHi = now
		}
		if now.After(deadline) {
			return 0, memory{}, fmt.Errorf("only %d of %d jobs completed in 5 minutes", done, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	rate := float64(hi-lo) / tHi.Sub(tLo).Seconds()
	if os.Getenv("BENCH_VERBOSE") != "" {
		fmt.Fprintf(os.Stderr, "  cpu ticks: machine %d, redis %d\n", cpuTicks(m.Cmd.Process.Pid), cpuTicks(redisPid))
	}
	for rdb.HLen(ctx, broker.KeyCompleted).Val() < int64(n) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return rate, m.memory(), nil
}

// serviceBench measures the supervisor with the test service: how long a machine takes from
// its start to all of 2 services ready, against the same 2 processes started and probed
// directly in the same run; and what each supervised service costs the machine in RSS and CPU
// (10 services against none).
func serviceBench(bin, dir, url string) ([]row, error) {
	svc := filepath.Join(dir, "testservice")
	if out, err := exec.Command("go", "build", "-o", svc, "./internal/testservice").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build testservice: %v\n%s", err, out)
	}
	servicesFile := func(n int) (string, []int, error) {
		var defs []string
		var ports []int
		for i := range n {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return "", nil, err
			}
			port := l.Addr().(*net.TCPAddr).Port
			l.Close()
			ports = append(ports, port)
			defs = append(defs, fmt.Sprintf(`{"name":"svc-%d","command":[%q],"port":%d,"probe":{"kind":"http","target":"http://127.0.0.1:%d/"}}`, i, svc, port, port))
		}
		path := filepath.Join(dir, fmt.Sprintf("services-%d.json", n))
		return path, ports, os.WriteFile(path, []byte("["+strings.Join(defs, ",")+"]"), 0o600)
	}
	ready := func(port int) bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	waitAll := func(ports []int) error {
		deadline := time.Now().Add(30 * time.Second)
		for _, p := range ports {
			for !ready(p) {
				if time.Now().After(deadline) {
					return fmt.Errorf("service on port %d not ready in 30 s", p)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}
		return nil
	}
	var viaMachine, direct []time.Duration
	for range 5 {
		file, ports, err := servicesFile(2)
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		m, err := startMachine(bin, dir, url, "mock:1", "MACHINE_SERVICES_FILE="+file, "MACHINE_LOG_DIR="+filepath.Join(dir, "logs"))
		if err != nil {
			return nil, err
		}
		err = waitAll(ports)
		viaMachine = append(viaMachine, time.Since(t0))
		m.stop()
		if err != nil {
			return nil, err
		}
		t0 = time.Now()
		var procs []*exec.Cmd
		for _, p := range ports {
			c := exec.Command(svc)
			c.Env = []string{fmt.Sprintf("PORT=%d", p)}
			if err := c.Start(); err != nil {
				return nil, err
			}
			procs = append(procs, c)
		}
		err = waitAll(ports)
		direct = append(direct, time.Since(t0))
		for _, c := range procs {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
		if err != nil {
			return nil, err
		}
	}
	rows := []row{{"machine start → 2 services ready (median of 5)", ms(percentile(viaMachine, 0.5)),
		ms(percentile(direct, 0.5)) + " (same processes started directly)", fmt.Sprintf("×%.1f", ratio(viaMachine, direct)), ""}}

	const n = 10
	measure := func(services int) (rssKB int64, cpu float64, err error) {
		extra := []string{"MACHINE_LOG_DIR=" + filepath.Join(dir, "logs")}
		var ports []int
		if services > 0 {
			file, p, err := servicesFile(services)
			if err != nil {
				return 0, 0, err
			}
			ports = p
			extra = append(extra, "MACHINE_SERVICES_FILE="+file)
		}
		m, err := startMachine(bin, dir, url, "mock:1", extra...)
		if err != nil {
			return 0, 0, err
		}
		defer m.stop()
		if err := waitAll(ports); err != nil {
			return 0, 0, err
		}
		time.Sleep(2 * time.Second) // settle
		c0 := cpuTicks(m.Cmd.Process.Pid)
		const window = 10 * time.Second
		time.Sleep(window)
		ticks := cpuTicks(m.Cmd.Process.Pid) - c0
		return m.rssKB(), float64(ticks) / 100 / window.Seconds() * 100, nil
	}
	rss0, cpu0, err := measure(0)
	if err != nil {
		return nil, err
	}
	rssN, cpuN, err := measure(n)
	if err != nil {
		return nil, err
	}
	rows = append(rows,
		row{"machine RSS per supervised service", fmt.Sprintf("%.2f MB", float64(rssN-rss0)/1024/n),
			fmt.Sprintf("%.1f MB with none, %.1f MB with %d", float64(rss0)/1024, float64(rssN)/1024, n), "", "< 2 MB"},
		row{"machine CPU per supervised service (10 s window)", fmt.Sprintf("%.3f %% of a core", (cpuN-cpu0)/n),
			fmt.Sprintf("%.2f %% with none, %.2f %% with %d", cpu0, cpuN, n), "", "< 0.1 % of a core"})
	return rows, nil
}

// busySnapshot is a full screen's worth of machine: 8 GPUs with history, 8 jobs, services.
func busySnapshot() control.Snapshot {
	f := func(v float64) *float64 { return &v }
	snap := control.Snapshot{Machine: control.Machine{ID: "bench", Phase: "ready", BrokerURL: "redis://127.0.0.1:6379",
		BrokerConnected: true, QueueDepth: 1234, GPUSource: "nvml"}}
	for i := range 8 {
		var hist []float64
		for k := range 120 {
			hist = append(hist, float64((k*7+i*13)%100))
		}
		id := fmt.Sprintf("%08d-job", i)
		snap.GPUs = append(snap.GPUs, control.GPU{Index: i, Name: "NVIDIA H200", Healthy: true, Util: f(80), MemUsedMB: f(90000),
			MemTotalMB: f(144384), TempC: f(70), PowerW: f(500), PowerLimit: f(700), History: hist, Jobs: []string{id}})
		snap.Services = append(snap.Services, control.Service{Name: fmt.Sprintf("comfyui-gpu%d", i), State: "ready", PID: 1000 + i, Port: 8188 + i})
		snap.Jobs = append(snap.Jobs, control.Job{ID: id, Service: "comfyui", Progress: float64(i * 12), Message: "KSampler", ElapsedMS: 12000})
		snap.Recent = append(snap.Recent, control.Finished{ID: id, Service: "comfyui", Outcome: "completed", DurationMS: 30000})
	}
	snap.Connectors = []control.Connector{{Name: "comfyui", State: "enabled", Busy: 8, Slots: 8, Done: 1000}}
	return snap
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// samplerCost returns the median CPU time of one sampler tick (8 fake GPUs, host metrics,
// Prometheus gauges), and of the GPU reads alone, over batches of ticks. At 1 Hz, CPU time per
// tick in seconds ×100 is the share of one core.
func samplerCost(ctx context.Context) (tick, gpuOnly time.Duration) {
	m := metrics.New()
	full := gpu.NewSampler(gpu.SamplerParams{Source: gpu.NewFake(8, "", 0), Host: gpu.NewHost("/"),
		OnSample: func(s gpu.Snapshot) { m.ObserveTelemetry(s) }})
	bare := gpu.NewSampler(gpu.SamplerParams{Source: gpu.NewFake(8, "", 0)})
	measure := func(s *gpu.Sampler) time.Duration {
		var per []time.Duration
		for range 5 {
			const n = 200
			t0 := cpuTime()
			for range n {
				s.Sample(ctx)
			}
			per = append(per, (cpuTime()-t0)/n)
		}
		return percentile(per, 0.5)
	}
	return measure(full), measure(bare)
}

func latencyRow(name string, v, base []time.Duration, p float64, goal string) row {
	a, c := percentile(v, p), percentile(base, p)
	return row{name, ms(a), ms(c) + " (1 s polling)", fmt.Sprintf("%.0f× faster", float64(c)/float64(max(a, 1))), goal}
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(int(p*float64(len(s))), len(s)-1)]
}

func ratio(a, b []time.Duration) float64 {
	return float64(percentile(a, 0.5)) / float64(max(percentile(b, 0.5), 1))
}

func median(f []float64) float64 {
	s := slices.Clone(f)
	slices.Sort(s)
	return s[len(s)/2]
}

func fmtRates(r []float64) string {
	var parts []string
	for _, x := range r {
		parts = append(parts, fmt.Sprintf("%.0f", x))
	}
	return strings.Join(parts, ", ")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func jobResult() job.Result { return job.Result{Success: true} }
