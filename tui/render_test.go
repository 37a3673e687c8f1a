package tui_test

import (
	"bytes"
	"fmt"
	"image/color"
	"io"
	"sync"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"
	uv "github.com/charmbracelet/ultraviolet"
	"github.com/charmbracelet/x/vt"

	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/tui"
)

// terminal is a real terminal emulator the program writes to.
type terminal struct {
	mu     sync.Mutex
	emu    *vt.Emulator
	writes chan struct{}
}

func (t *terminal) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, _ = t.emu.Write(bytes.ReplaceAll(p, []byte("\n"), []byte("\r\n"))) // as a tty's ONLCR would
	select {
	case t.writes <- struct{}{}:
	default:
	}
	return len(p), nil
}

// settle waits for the program to write, then until it has written nothing for a while.
func (t *terminal) settle(tb testing.TB) {
	tb.Helper()
	deadline := time.After(10 * time.Second)
	select {
	case <-t.writes:
	case <-deadline:
		tb.Fatal("the program wrote nothing")
	}
	for {
		select {
		case <-t.writes:
		case <-time.After(150 * time.Millisecond):
			return
		case <-deadline:
			tb.Fatal("the program kept writing")
		}
	}
}

// Frames after the first are drawn from their changed lines only (third_party/bubbletea's
// patch). On a real terminal every frame must still be the view drawn whole: each cell's
// text, colours and attributes.
func TestChangedLinesDrawTheWholeFrame(t *testing.T) {
	const w, h = 160, 48
	term := &terminal{emu: vt.NewEmulator(w, h), writes: make(chan struct{}, 1)}
	go func() { _, _ = io.Copy(io.Discard, term.emu) }() // its answers to the program's queries
	client := chanClient{updates: make(chan control.Snapshot, 1)}
	inR, inW := io.Pipe()
	defer inW.Close()
	prog := tea.NewProgram(tui.New(client, tui.Options{}), append(tui.ProgramOptions(), tea.WithInput(inR), tea.WithOutput(term),
		tea.WithWindowSize(w, h), tea.WithoutSignals(), tea.WithColorProfile(colorprofile.TrueColor),
		tea.WithEnvironment([]string{"TERM=xterm-256color"}))...)
	done := make(chan error, 1)
	go func() { _, err := prog.Run(); done <- err }()
	defer func() { prog.Quit(); <-done }()

	term.settle(t) // its terminal queries
	snap := benchSnapshot(2)
	for i := range 12 {
		// What moves from one snapshot to the next: the uptime, readings whose colour follows
		// their level, a history shifted by one sample, a GPU going out of service and back.
		snap.Machine.UptimeMS = int64(i) * 2000
		util := float64(i*37%100) + 0.5
		snap.GPUs[0].Util = &util
		snap.GPUs[0].History = append(snap.GPUs[0].History[1:], util)
		snap.GPUs[1].Healthy = i%4 != 3
		client.updates <- snap
		term.settle(t)
		term.check(t, fmt.Sprintf("frame %d", i), tui.Frame(snap, tui.MainScreen, "", nil, w, h))
	}
	// A whole other screen and back: most lines change, a few stay.
	_, _ = inW.Write([]byte("?"))
	term.settle(t)
	term.check(t, "the help screen", tui.Frame(snap, tui.HelpScreen, "", nil, w, h))
	_, _ = inW.Write([]byte("?"))
	term.settle(t)
	term.check(t, "the main screen again", tui.Frame(snap, tui.MainScreen, "", nil, w, h))
}

// check fails the test where the terminal's cells differ from view drawn whole.
func (t *terminal) check(tb testing.TB, what, view string) {
	tb.Helper()
	w, h := t.emu.Width(), t.emu.Height()
	want := uv.NewScreenBuffer(w, h)
	uv.NewStyledString(view).Draw(want, want.Bounds())
	t.mu.Lock()
	diffs := cellDiffs(t.emu, want, w, h)
	t.mu.Unlock()
	if len(diffs) > 0 {
		tb.Fatalf("%s differs from the view drawn whole in %d cells, first %s", what, len(diffs), diffs[0])
	}
}

func cellDiffs(got *vt.Emulator, want uv.ScreenBuffer, w, h int) []string {
	var diffs []string
	for y := range h {
		for x := range w {
			g, e := got.CellAt(x, y), want.CellAt(x, y)
			if g == nil || e == nil {
				if (g == nil) != (e == nil) {
					diffs = append(diffs, fmt.Sprintf("(%d,%d): one side has no cell", x, y))
				}
				continue
			}
			gc, ec := g.Content, e.Content
			if gc == "" {
				gc = " "
			}
			if ec == "" {
				ec = " "
			}
			same := gc == ec && g.Style.Equal(&e.Style)
			if gc == " " && ec == " " { // a blank shows only its background
				same = colorEqual(g.Style.Bg, e.Style.Bg)
			}
			if !same {
				diffs = append(diffs, fmt.Sprintf("(%d,%d): %q %+v, want %q %+v", x, y, gc, g.Style, ec, e.Style))
			}
		}
	}
	return diffs
}

func colorEqual(a, b color.Color) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	r1, g1, b1, a1 := a.RGBA()
	r2, g2, b2, a2 := b.RGBA()
	return r1 == r2 && g1 == g2 && b1 == b2 && a1 == a2
}
