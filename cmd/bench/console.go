package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/tui"
)

// withHistory gives a snapshot 5 minutes of every history the large layout draws.
func withHistory(snap control.Snapshot) control.Snapshot {
	series := func(f func(k int) float64) []float64 {
		out := make([]float64, 300)
		for k := range out {
			out[k] = f(k)
		}
		return out
	}
	for i := range snap.GPUs {
		d := &snap.GPUs[i].Detail
		snap.GPUs[i].History = series(func(k int) float64 { return float64((k*7 + i*13) % 100) })
		d.MemHistory = series(func(k int) float64 { return 40000 + float64(k*100) })
		d.TempHistory = series(func(k int) float64 { return 40 + float64(k%30) })
		d.PowerHistory = series(func(k int) float64 { return 200 + float64(k) })
	}
	for i := range snap.Services {
		d := &snap.Services[i].Detail
		d.CPUHistory = series(func(k int) float64 { return float64(k % 50) })
		d.RSSHistory = series(func(k int) float64 { return 2000 + float64(k) })
	}
	snap.Trends = control.Trends{StepMS: 1000, QueueDepth: series(func(k int) float64 { return float64(k % 40) }),
		JobsPerMin: series(func(k int) float64 { return float64(k % 25) }), HostCPU: series(func(k int) float64 { return float64(k % 60) })}
	return snap
}

// benchClient is a core that sent one snapshot and answers every command with nothing.
type benchClient struct{ updates chan control.Snapshot }

func (c benchClient) Updates() <-chan control.Snapshot { return c.updates }
func (c benchClient) Do(context.Context, control.Command) (control.Result, error) {
	return control.Result{OK: true}, nil
}
func (c benchClient) Close() error { return nil }

// stampWriter notes when the renderer writes a frame.
type stampWriter struct{ frames chan time.Time }

func (w stampWriter) Write(p []byte) (int, error) {
	select {
	case w.frames <- time.Now():
	default:
	}
	return len(p), nil
}

// keyGap bounds the random pause before each key press. The renderer draws a key at once when
// its last frame is at least one frame interval (8.3 ms at 120 fps) old, and at the end of the
// interval otherwise, so the pause decides which path a key takes: pauses up to 50 ms are as fast
// as the quickest key repeat and faster, and about one key in six lands inside the interval.
const keyGap = 50 * time.Millisecond

// keyToFrame runs a real console program at 240×67 and returns, for n key presses (tab, which
// moves the focus and so changes the screen), the time from sending the key to the renderer
// writing the next frame.
func keyToFrame(snap control.Snapshot, n int) ([]time.Duration, error) {
	client := benchClient{updates: make(chan control.Snapshot, 1)}
	client.updates <- snap
	out := stampWriter{frames: make(chan time.Time, 64)}
	inR, inW := io.Pipe()
	defer inW.Close()
	prog := tea.NewProgram(tui.New(client, tui.Options{}), append(tui.ProgramOptions(), tea.WithInput(inR), tea.WithOutput(out),
		tea.WithWindowSize(240, 67), tea.WithoutSignals())...)
	done := make(chan error, 1)
	go func() { _, err := prog.Run(); done <- err }()
	defer func() { prog.Quit(); <-done }()
	drain := func(quiet time.Duration) {
		for {
			select {
			case <-out.frames:
			case <-time.After(quiet):
				return
			}
		}
	}
	drain(500 * time.Millisecond)
	var lat []time.Duration
	for range n {
		time.Sleep(time.Duration(rand.Int64N(int64(keyGap))))
		drain(0)
		t0 := time.Now()
		prog.Send(tea.KeyPressMsg{Code: tea.KeyTab})
		select {
		case t1 := <-out.frames:
			lat = append(lat, t1.Sub(t0))
		case <-time.After(2 * time.Second):
			return nil, fmt.Errorf("no frame within 2 s of a key press")
		}
	}
	return lat, nil
}

// Repetitions of the console bench: each figure is the median of its runs.
const (
	frameRuns   = 3   // of frameSamples frames each
	frameSample = 700 // frames per run
	keyRuns     = 3   // of keySamples key presses each
	keySamples  = 200
	idleWindows = 5                // of idleWindow each
	idleWindow  = 6 * time.Second  // whole intervals of both consoles, so every window holds as many snapshots
	idleLife    = 45 * time.Second // how long an idle console child stays attached
)

// consoleBench measures the console against its goals: one frame of the main screen at 160×48
// and of the large layout at 240×67 with 5 minutes of history, key press → frame of a real
// program at 240×67, and the CPU an attached, idle console (a real tea.Program on the control
// socket of a running machine, in a process of its own) uses, against a console that takes
// every sample in the same windows and next to the machine's own CPU. Every figure is the
// median of repeated runs, since these machines are shared.
func consoleBench(bin, dir, url string) ([]row, error) {
	snap := busySnapshot()
	full := withHistory(snap)
	var frames, large []time.Duration // per-run medians
	for range frameRuns {
		frames = append(frames, frameMedian(func() { _ = tui.Frame(snap, tui.MainScreen, "", nil, 160, 48) }))
		large = append(large, frameMedian(func() { _ = tui.Frame(full, tui.MainScreen, "comfyui-gpu0", nil, 240, 67) }))
	}
	var p50s, p99s []time.Duration
	for range keyRuns {
		keys, err := keyToFrame(full, keySamples)
		if err != nil {
			return nil, err
		}
		p50s, p99s = append(p50s, percentile(keys, 0.5)), append(p99s, percentile(keys, 0.99))
	}
	m, err := startMachine(bin, dir, url, "mock:1")
	if err != nil {
		return nil, err
	}
	defer m.stop()
	// Two idle consoles at once, in processes of their own: one at the default interval and,
	// as the baseline, one that takes every 1 Hz sample as it comes (what every console did
	// before readings were paced).
	var consoles [2]*exec.Cmd
	for i, interval := range []time.Duration{control.DefaultInterval, control.MinInterval} {
		c, err := startIdleConsole(filepath.Join(dir, "run", "control.sock"), interval)
		if err != nil {
			return nil, err
		}
		defer func() { _ = c.Process.Kill(); _ = c.Wait() }()
		consoles[i] = c
	}
	time.Sleep(3 * time.Second) // attached, first frame drawn
	var idle, everySample []float64
	for range idleWindows {
		c0, b0 := processCPU(consoles[0].Process.Pid), processCPU(consoles[1].Process.Pid)
		time.Sleep(idleWindow)
		idle = append(idle, share(max(processCPU(consoles[0].Process.Pid)-c0, 0), idleWindow))
		everySample = append(everySample, share(max(processCPU(consoles[1].Process.Pid)-b0, 0), idleWindow))
	}
	m0 := processCPU(m.Cmd.Process.Pid)
	time.Sleep(idleWindow)
	machineCPU := share(processCPU(m.Cmd.Process.Pid)-m0, idleWindow)
	return []row{
		{fmt.Sprintf("console frame, main screen 160×48 (median of %d runs × %d)", frameRuns, frameSample), ms(percentile(frames, 0.5)),
			"runs " + msList(frames), "", "≤ 2 ms"},
		{fmt.Sprintf("console frame, large layout 240×67, 5 min of history (median of %d runs × %d)", frameRuns, frameSample), ms(percentile(large, 0.5)),
			"runs " + msList(large), fmt.Sprintf("%.1f× the 160×48 frame", ratio(large, frames)), "≤ 3 ms"},
		{fmt.Sprintf("console key → frame p99 at 240×67 (median of %d runs × %d keys, real program)", keyRuns, keySamples), ms(percentile(p99s, 0.5)),
			"runs " + msList(p99s), "", "≤ 16 ms"},
		{fmt.Sprintf("console key → frame p50 at 240×67 (median of %d runs × %d keys, real program)", keyRuns, keySamples), ms(percentile(p50s, 0.5)),
			"runs " + msList(p50s), "", ""},
		{fmt.Sprintf("idle attached console CPU, 160×48, readings every %s (median of %d × %s, own process)", control.DefaultInterval, idleWindows, idleWindow),
			fmt.Sprintf("%.2f %% of a core", median(idle)),
			fmt.Sprintf("every sample (--interval %s): %.2f %%; windows %s against %s; the machine itself: %.2f %%",
				control.MinInterval, median(everySample), pctList(idle), pctList(everySample), machineCPU),
			fmt.Sprintf("%.2f× the every-sample console", median(idle)/max(median(everySample), 1e-9)), "≤ 0.3 % of a core"},
	}, nil
}

// frameMedian is the median time of frameSample calls of draw.
func frameMedian(draw func()) time.Duration {
	d := make([]time.Duration, 0, frameSample)
	for range frameSample {
		t0 := time.Now()
		draw()
		d = append(d, time.Since(t0))
	}
	return percentile(d, 0.5)
}

// startIdleConsole starts this program as an idle console on socket, asking for readings every
// interval.
func startIdleConsole(socket string, interval time.Duration) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c := exec.Command(self, "-idle-console", socket, "-idle-interval", interval.String())
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c.Stderr = os.Stderr
	if err := c.Start(); err != nil {
		return nil, err
	}
	return c, nil
}

// runIdleConsole attaches a console to socket, asking for readings every interval, and leaves
// it idle for idleLife. With BENCH_CONSOLE_CPUPROFILE=path set it writes a CPU profile of its
// life to path-<interval> (go tool pprof); at 100 Hz an idle console gives few samples, so
// `perf record -g -p` on it resolves more.
func runIdleConsole(socket string, interval time.Duration) error {
	if path := os.Getenv("BENCH_CONSOLE_CPUPROFILE"); path != "" {
		f, err := os.Create(path + "-" + interval.String())
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	client, err := control.Dial(context.Background(), socket, interval)
	if err != nil {
		return err
	}
	defer client.Close()
	inR, inW := io.Pipe()
	defer inW.Close()
	prog := tea.NewProgram(tui.New(client, tui.Options{Interval: interval}), append(tui.ProgramOptions(), tea.WithInput(inR), tea.WithOutput(io.Discard),
		tea.WithWindowSize(160, 48), tea.WithoutSignals())...)
	go func() { time.Sleep(idleLife); prog.Quit() }()
	_, err = prog.Run()
	return err
}

// processCPU is the CPU time a process's threads have run: the sum of their schedstat run
// times, in nanoseconds, which resolves the idle console's few milliseconds a second; where
// schedstat is missing, user+system clock ticks (10 ms each).
func processCPU(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum time.Duration
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		ns, err := strconv.ParseInt(strings.Fields(string(data))[0], 10, 64)
		if err != nil {
			continue
		}
		sum += time.Duration(ns)
	}
	if len(tasks) == 0 {
		return time.Duration(cpuTicks(pid)) * 10 * time.Millisecond
	}
	return sum
}

// share is CPU time over a window as a percentage of one core.
func share(cpu, window time.Duration) float64 { return cpu.Seconds() / window.Seconds() * 100 }

func msList(d []time.Duration) string {
	var parts []string
	for _, x := range d {
		parts = append(parts, fmt.Sprintf("%.2f", float64(x.Microseconds())/1000))
	}
	return strings.Join(parts, ", ") + " ms"
}

func pctList(f []float64) string {
	var parts []string
	for _, x := range f {
		parts = append(parts, fmt.Sprintf("%.2f", x))
	}
	return strings.Join(parts, ", ") + " %"
}
