package tui_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"
	"github.com/charmbracelet/x/exp/golden"
	"github.com/charmbracelet/x/exp/teatest/v2"
	"github.com/charmbracelet/x/vt"

	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/tui"
)

// fakeCore is a deterministic core: the test hands it snapshots and scripts its answers.
type fakeCore struct {
	updates chan control.Snapshot
	mu      sync.Mutex
	cmds    []control.Command
	results map[control.Op]control.Result
	logs    []string
}

func newFake() *fakeCore {
	return &fakeCore{updates: make(chan control.Snapshot, 8), results: map[control.Op]control.Result{}}
}

func (f *fakeCore) Updates() <-chan control.Snapshot { return f.updates }
func (f *fakeCore) Close() error                     { return nil }

func (f *fakeCore) Do(_ context.Context, c control.Command) (control.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, c)
	if c.Op == control.Logs {
		return control.Result{OK: true, Lines: f.logs}, nil
	}
	if r, ok := f.results[c.Op]; ok {
		return r, nil
	}
	return control.Result{OK: true, Message: string(c.Op) + " done"}, nil
}

func (f *fakeCore) commands() []control.Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]control.Command(nil), f.cmds...)
}

func ptr(v float64) *float64 { return &v }

// fixture is a machine with two GPUs (one busy), two ComfyUI services, two connectors, a job
// in flight and some finished ones.
func fixture() control.Snapshot {
	hist := func(base float64) []float64 {
		var h []float64
		for i := range 40 {
			h = append(h, base+float64((i*37)%30))
		}
		return h
	}
	return control.Snapshot{
		Seq: 1,
		Machine: control.Machine{ID: "gpu-box-17", Pool: "fast", Phase: "ready", UptimeMS: 3725000,
			BrokerURL: "redis://:xxxxx@redis.internal:6379/0", BrokerConnected: true, QueueDepth: 42, GPUSource: "nvml"},
		GPUs: []control.GPU{
			{Index: 0, Name: "NVIDIA H200 141GB HBM3e", Healthy: true, Util: ptr(87), MemUsedMB: ptr(96256), MemTotalMB: ptr(144384),
				TempC: ptr(71), PowerW: ptr(512), PowerLimit: ptr(700), History: hist(60), Jobs: []string{"7f3a9c21-5e0b-4d7e-9a1c-2b8d6e4f0a13"}},
			{Index: 1, Name: "NVIDIA H200 141GB HBM3e", Healthy: true, Util: ptr(2), MemUsedMB: ptr(4200), MemTotalMB: ptr(144384),
				TempC: ptr(34), PowerW: ptr(88), PowerLimit: ptr(700), History: hist(0)},
		},
		Services: []control.Service{
			{Name: "comfyui-gpu0", State: "ready", PID: 4242, Restarts: 0, Healthy: true, Port: 8188, UptimeMS: 3600000},
			{Name: "comfyui-gpu1", State: "ready", PID: 4243, Restarts: 1, Healthy: true, Port: 8189, UptimeMS: 1800000},
		},
		Connectors: []control.Connector{
			{Name: "comfyui", State: "enabled", Busy: 1, Slots: 2, Done: 118, Failed: 3},
			{Name: "openai", State: "enabled", Busy: 0, Slots: 1, Done: 40, Failed: 0},
		},
		Jobs: []control.Job{{ID: "7f3a9c21-5e0b-4d7e-9a1c-2b8d6e4f0a13", Slot: "gpu-box-17-worker-comfyui-0", Connector: "comfyui",
			Service: "comfyui", GPU: 0, Progress: 30, Message: "KSampler 9/30", ElapsedMS: 12000}},
		Recent: []control.Finished{
			{ID: "c0ffee00-aaaa", Service: "openai_text", Outcome: "completed", DurationMS: 2300},
			{ID: "deadbeef-bbbb", Service: "comfyui", Outcome: "failed", Error: "execution_error: CUDA out of memory", DurationMS: 45000},
		},
	}
}

// screen rebuilds the terminal from the program's output with x/vt, as TOOLING.md describes:
// raw output streams differ between runs, the screen does not.
type screen struct {
	mu  sync.Mutex
	emu *vt.Emulator
}

func (s *screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.emu.String()
}

type session struct {
	t    testing.TB
	tm   *teatest.TestModel
	scr  *screen
	stop chan struct{}
	wg   sync.WaitGroup
}

func start(t testing.TB, w, h int, core *fakeCore, opts tui.Options) *session {
	t.Helper()
	tm := teatest.NewTestModel(t, tui.New(core, opts), teatest.WithInitialTermSize(w, h),
		teatest.WithProgramOptions(tea.WithColorProfile(colorprofile.Ascii), tea.WithEnvironment([]string{"TERM=xterm-256color"})))
	s := &session{t: t, tm: tm, scr: &screen{emu: vt.NewEmulator(w, h)}, stop: make(chan struct{})}
	s.wg.Go(func() { // the program's output, into the emulator
		buf := make([]byte, 32<<10)
		for {
			n, err := tm.Output().Read(buf)
			if n > 0 {
				s.scr.mu.Lock()
				_, _ = s.scr.emu.Write([]byte(strings.ReplaceAll(string(buf[:n]), "\n", "\r\n")))
				s.scr.mu.Unlock()
				continue
			}
			select {
			case <-s.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if err != nil && err != io.EOF {
				return
			}
		}
	})
	// The emulator's answers to terminal queries must be read or its writes block. The reader
	// is left to end with the test binary: vt's Close races with a pending Read.
	go func() { _, _ = io.Copy(io.Discard, s.scr.emu) }()
	t.Cleanup(func() {
		_ = tm.Quit()
		close(s.stop)
		s.wg.Wait()
	})
	return s
}

// waitFor waits until the screen shows text and has stopped changing.
func (s *session) waitFor(text string) string {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	last, stableSince := "", time.Now()
	for {
		cur := s.scr.String()
		if cur != last {
			last, stableSince = cur, time.Now()
		}
		if strings.Contains(cur, text) && time.Since(stableSince) > 150*time.Millisecond {
			return cur
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("screen never showed %q:\n%s", text, cur)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *session) press(keys ...string) {
	for _, k := range keys {
		switch k {
		case "tab":
			s.tm.Send(tea.KeyPressMsg{Code: tea.KeyTab})
		case "esc":
			s.tm.Send(tea.KeyPressMsg{Code: tea.KeyEscape})
		case "enter":
			s.tm.Send(tea.KeyPressMsg{Code: tea.KeyEnter})
		default:
			r := []rune(k)[0]
			s.tm.Send(tea.KeyPressMsg{Code: r, Text: k})
		}
	}
}

var sizes = []struct{ w, h int }{{80, 24}, {160, 48}, {240, 67}}

func eachSize(t *testing.T, fn func(t *testing.T, w, h int)) {
	for _, sz := range sizes {
		t.Run(fmt.Sprintf("%dx%d", sz.w, sz.h), func(t *testing.T) { fn(t, sz.w, sz.h) })
	}
}

func TestInitialScreen(t *testing.T) {
	eachSize(t, func(t *testing.T, w, h int) {
		core := newFake()
		core.updates <- fixture()
		s := start(t, w, h, core, tui.Options{})
		out := s.waitFor("openai")
		if !strings.Contains(out, "redis.internal:6379") || (w >= 120) != strings.Contains(out, "redis://:xxxxx@") {
			t.Error("the header shows the broker's host, and its redacted URL when there is room")
		}
		golden.RequireEqual(t, out)
	})
}

func TestToggleConnector(t *testing.T) {
	eachSize(t, func(t *testing.T, w, h int) {
		core := newFake()
		core.results[control.DisableConnector] = control.Result{OK: true, Message: "comfyui: draining 2 slot(s): their jobs finish, or go back to the queue after 1m0s"}
		core.updates <- fixture()
		s := start(t, w, h, core, tui.Options{})
		s.waitFor("openai")
		s.press("tab", "tab", "t")
		s.waitFor("in flight? They finish")
		s.press("y")
		out := s.waitFor("draining 2 slot(s)")
		cmds := slices.DeleteFunc(core.commands(), func(c control.Command) bool { return c.Op == control.Logs }) // the log tail's polls
		if len(cmds) != 1 || cmds[0].Op != control.DisableConnector || cmds[0].Connector != "comfyui" {
			t.Fatalf("commands sent: %+v", cmds)
		}
		golden.RequireEqual(t, out)
	})
}

func TestJobProgressing(t *testing.T) {
	eachSize(t, func(t *testing.T, w, h int) {
		core := newFake()
		snap := fixture()
		core.updates <- snap
		s := start(t, w, h, core, tui.Options{})
		s.waitFor("KSampler 9/30")
		snap.Seq, snap.Jobs[0].Progress, snap.Jobs[0].Message, snap.Jobs[0].ElapsedMS = 2, 70, "KSampler 21/30", 27000
		core.updates <- snap
		golden.RequireEqual(t, s.waitFor("KSampler 21/30"))
	})
}

func TestServiceCrashShown(t *testing.T) {
	eachSize(t, func(t *testing.T, w, h int) {
		core := newFake()
		snap := fixture()
		snap.Services[1] = control.Service{Name: "comfyui-gpu1", State: "errored", Restarts: 10, Port: 8189,
			Error: "exited 11 times in a row, each within 1m0s of starting (last: signal: killed)"}
		core.updates <- snap
		s := start(t, w, h, core, tui.Options{})
		golden.RequireEqual(t, s.waitFor("errored"))
	})
}

// A connector change that failed shows as failed, with its reason.
func TestFailedConnectorShown(t *testing.T) {
	core := newFake()
	snap := fixture()
	snap.Connectors = append(snap.Connectors, control.Connector{Name: "playwright", State: state.ConnectorFailed,
		Error: "install browser: no Chromium on PATH"})
	core.updates <- snap
	s := start(t, 160, 48, core, tui.Options{})
	s.waitFor("no Chromium on PATH")
}

func TestLogsView(t *testing.T) {
	eachSize(t, func(t *testing.T, w, h int) {
		core := newFake()
		for i := 1; i <= 60; i++ {
			core.logs = append(core.logs, fmt.Sprintf("[%02d] Prompt executed in %d.%d seconds", i, i%9, i%7))
		}
		core.updates <- fixture()
		s := start(t, w, h, core, tui.Options{})
		s.waitFor("openai")
		s.press("tab", "l")
		s.waitFor("(following)") // the large layout's log tail shows the same lines on the main screen
		golden.RequireEqual(t, s.waitFor("[60] Prompt"))
		if cmds := core.commands(); cmds[0].Op != control.Logs || cmds[0].Service != "comfyui-gpu0" {
			t.Errorf("commands: %+v", cmds)
		}
	})
}

func TestHelpView(t *testing.T) {
	eachSize(t, func(t *testing.T, w, h int) {
		core := newFake()
		core.updates <- fixture()
		s := start(t, w, h, core, tui.Options{})
		s.waitFor("openai")
		s.press("?")
		golden.RequireEqual(t, s.waitFor("detach"))
	})
}

// In the machine's own process, q asks; D detaches (the machine keeps running).
func TestInProcessQuitAsks(t *testing.T) {
	core := newFake()
	core.updates <- fixture()
	m := tui.New(core, tui.Options{InProcess: true})
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(80, 24))
	tm.Send(tea.KeyPressMsg{Code: 'q', Text: "q"})
	tm.Send(tea.KeyPressMsg{Code: 'D', Text: "D"})
	final := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*tui.Model)
	if final.Outcome() != tui.Detach {
		t.Fatalf("outcome = %v, want Detach", final.Outcome())
	}
}
