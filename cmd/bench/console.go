package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
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
		time.Sleep(time.Duration(rand.IntN(10)) * time.Millisecond) // a random phase against the renderer's tick
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
