package tui_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/tui"
)

// chanClient is a core that delivers the snapshots sent on updates.
type chanClient struct{ updates chan control.Snapshot }

func (c chanClient) Updates() <-chan control.Snapshot { return c.updates }
func (c chanClient) Do(context.Context, control.Command) (control.Result, error) {
	return control.Result{OK: true}, nil
}
func (c chanClient) Close() error { return nil }

type frameSignal chan struct{}

func (w frameSignal) Write(p []byte) (int, error) {
	select {
	case w <- struct{}{}:
	default:
	}
	return len(p), nil
}

func benchSnapshot(gpus int) control.Snapshot {
	f := func(v float64) *float64 { return &v }
	snap := control.Snapshot{Machine: control.Machine{ID: "bench", Phase: "ready", BrokerURL: "redis://127.0.0.1:6379",
		BrokerConnected: true, GPUSource: "fake"}}
	for i := range gpus {
		hist := make(control.Series, 300)
		for k := range hist {
			hist[k] = float64((k*7 + i*13) % 100)
		}
		snap.GPUs = append(snap.GPUs, control.GPU{Index: i, Name: "NVIDIA H200", Healthy: true, Util: f(80), MemUsedMB: f(90000),
			MemTotalMB: f(144384), TempC: f(70), PowerW: f(500), PowerLimit: f(700), History: hist,
			Detail: control.GPUDetail{MemHistory: hist, TempHistory: hist, PowerHistory: hist}})
	}
	snap.Connectors = []control.Connector{{Name: "mock", State: "enabled", Slots: 1}}
	snap.Trends = control.Trends{StepMS: 1000, QueueDepth: make(control.Series, 300), JobsPerMin: make(control.Series, 300), HostCPU: make(control.Series, 300)}
	return snap
}

// BenchmarkSnapshotFrame is what an idle attached console does once a second: take a new
// snapshot (the uptime moved) and draw it, in a real program at 160×48. cpu-µs/op is the
// process's CPU time per update, every goroutine and the runtime included.
func BenchmarkSnapshotFrame(b *testing.B) {
	for _, gpus := range []int{2, 8} {
		b.Run(fmt.Sprintf("gpus=%d", gpus), func(b *testing.B) {
			client := chanClient{updates: make(chan control.Snapshot, 1)}
			frames := make(frameSignal, 1)
			inR, inW := io.Pipe()
			defer inW.Close()
			prog := tea.NewProgram(tui.New(client, tui.Options{}), append(tui.ProgramOptions(), tea.WithInput(inR), tea.WithOutput(frames),
				tea.WithWindowSize(160, 48), tea.WithoutSignals())...)
			done := make(chan error, 1)
			go func() { _, err := prog.Run(); done <- err }()
			defer func() { prog.Quit(); <-done }()
			snap := benchSnapshot(gpus)
			send := func(i int) {
				snap.Machine.UptimeMS = int64(i) * 1000
				client.updates <- snap
				<-frames
				time.Sleep(gap) // past the frame interval
			}
			for i := range 5 {
				send(i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			t0 := cpu()
			for i := range b.N {
				send(i + 5)
			}
			b.ReportMetric(float64((cpu()-t0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// gap is the pause between updates (TUI_BENCH_GAP, default 10ms, past the 8.3 ms frame interval).
// A real console waits a second, and an update after a long pause costs more (cold caches):
// 2.3 ms of CPU at 500ms against 1.6 ms at 10ms here.
var gap = func() time.Duration {
	d, err := time.ParseDuration(os.Getenv("TUI_BENCH_GAP"))
	if err != nil {
		return 10 * time.Millisecond
	}
	return d
}()

// cpu is this process's user+system CPU time.
func cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
