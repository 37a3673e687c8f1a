package tui

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"

	tea "charm.land/bubbletea/v2"

	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/core/state"
)

// Options shape the console.
type Options struct {
	// InProcess is set when the console runs in the machine's own process: then quitting asks
	// whether to stop the machine or detach and leave it running headless.
	InProcess bool
	// Interval is how often the large layout's log tail is read again, like the readings
	// (`machine console --interval`); 0 is control.DefaultInterval.
	Interval time.Duration
}

// Outcome is how the console ended.
type Outcome int

const (
	Quit        Outcome = iota // attached console closed; the core is untouched
	Detach                     // in-process: keep the machine running headless
	StopMachine                // in-process: stop the machine
)

type pane int

const (
	paneGPUs pane = iota
	paneServices
	paneConnectors
	paneJobs
	paneDecisions // autoscaler, demand, model cache, durations: one row (decisions.go)
	numPanes
)

var paneNames = [numPanes]string{"GPUs", "Services", "Connectors", "Jobs", "Decisions"}

type mode int

const (
	modeMain mode = iota
	modeHelp
	modeLogs
	modeConfirm
	modeQuit
	modeDescribe
)

// Model is the console.
type Model struct {
	client control.Client
	opts   Options
	keys   keyMap
	styles styles

	snap      control.Snapshot
	have      bool
	closed    bool
	width     int
	height    int
	focus     pane
	sel       [numPanes]int
	mode      mode
	filtering bool
	filter    string
	status    string
	confirm   control.Command
	question  string
	outcome   Outcome

	logService string
	logs       []string
	follow     bool
	tickGen    int // the generation of the log polls in force; older ticks are dropped
	wrap       bool
	logScroll  int // lines up from the bottom

	ext ext // large layout, describe views, mouse, drawing on change (ext.go)
}

// New returns the console for a client.
func New(client control.Client, opts Options) *Model {
	return &Model{client: client, opts: opts, keys: defaultKeys(), styles: defaultStyles(), follow: true, width: 80, height: 24}
}

// Outcome says how the console ended, once its program returned.
func (m *Model) Outcome() Outcome { return m.outcome }

type (
	snapshotMsg control.Snapshot
	closedMsg   struct{}
	resultMsg   struct {
		op  control.Op
		res control.Result
		err error
	}
	logsMsg struct {
		service string
		lines   []string
		err     error
	}
	logTickMsg struct{ gen int }
)

func (m *Model) waitSnapshot() tea.Cmd {
	ch := m.client.Updates()
	return func() tea.Msg {
		s, ok := <-ch
		if !ok {
			return closedMsg{}
		}
		return snapshotMsg(s)
	}
}

func (m *Model) do(c control.Command) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := m.client.Do(ctx, c)
		if c.Op == control.Logs {
			if err == nil && !res.OK {
				err = errString(res.Error)
			}
			return logsMsg{service: c.Service, lines: res.Lines, err: err}
		}
		return resultMsg{op: c.Op, res: res, err: err}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// Init implements tea.Model.
func (m *Model) Init() tea.Cmd { return m.waitSnapshot() }

// update handles the messages ext.go's Update passes on.
func (m *Model) update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		return m, nil
	case snapshotMsg:
		m.snap, m.have = control.Snapshot(msg), true
		m.clampSelection()
		return m, m.waitSnapshot()
	case closedMsg:
		m.closed = true
		m.status = "the machine went away; press q to quit"
		return m, nil
	case resultMsg:
		switch {
		case msg.err != nil:
			m.status = "error: " + msg.err.Error()
		case !msg.res.OK:
			m.status = msg.res.Error
		default:
			m.status = msg.res.Message
		}
		return m, nil
	case logsMsg:
		if msg.service == m.logService {
			if msg.err != nil {
				m.status = msg.err.Error()
			} else {
				m.logs = msg.lines
			}
		}
		return m, nil
	case logTickMsg:
		// Only the newest tick chain polls: f and l start a new one, and an older chain's tick ends here.
		if msg.gen == m.tickGen && m.mode == modeLogs && m.follow {
			return m, tea.Batch(m.do(control.Command{Op: control.Logs, Service: m.logService, Lines: 2000}), m.logTick())
		}
		return m, nil
	case tea.KeyPressMsg:
		return m.key(msg.String())
	}
	return m, nil
}

// logTick schedules the next poll of the followed log, in the current tick generation.
func (m *Model) logTick() tea.Cmd {
	gen := m.tickGen
	return tea.Tick(time.Second, func(time.Time) tea.Msg { return logTickMsg{gen: gen} })
}

// newLogTicks starts a new chain of log polls; any older chain stops at its next tick.
func (m *Model) newLogTicks() tea.Cmd {
	m.tickGen++
	return m.logTick()
}

func (m *Model) key(k string) (tea.Model, tea.Cmd) {
	if m.filtering {
		switch k {
		case "enter":
			m.filtering = false
		case "esc":
			m.filtering, m.filter = false, ""
		case "backspace":
			if m.filter != "" {
				_, size := utf8.DecodeLastRuneInString(m.filter)
				m.filter = m.filter[:len(m.filter)-size]
			}
		default:
			if len([]rune(k)) == 1 {
				m.filter += k
			} else if k == "space" {
				m.filter += " "
			}
		}
		m.clampSelection()
		return m, nil
	}
	switch m.mode {
	case modeQuit:
		switch {
		case m.keys.Stop.matches(k):
			m.outcome = StopMachine
			return m, tea.Quit
		case m.keys.Detach.matches(k):
			m.outcome = Detach
			return m, tea.Quit
		case m.keys.Back.matches(k), m.keys.No.matches(k):
			m.mode = modeMain
		}
		return m, nil
	case modeConfirm:
		switch {
		case m.keys.Yes.matches(k):
			m.mode = modeMain
			return m, m.do(m.confirm)
		case m.keys.No.matches(k), m.keys.Back.matches(k):
			m.mode, m.status = modeMain, "cancelled"
		}
		return m, nil
	case modeHelp:
		if m.keys.Help.matches(k) || m.keys.Back.matches(k) {
			m.mode = modeMain
		} else if m.keys.Quit.matches(k) {
			return m.quit()
		}
		return m, nil
	case modeLogs:
		switch {
		case m.keys.Back.matches(k):
			m.mode, m.filter, m.logScroll = modeMain, "", 0
		case m.keys.Follow.matches(k):
			m.follow = !m.follow
			m.logScroll = 0
			if m.follow {
				return m, m.newLogTicks()
			}
		case m.keys.Wrap.matches(k):
			m.wrap = !m.wrap
		case m.keys.Filter.matches(k):
			m.filtering = true
		case m.keys.Up.matches(k):
			m.follow = false
			m.logScroll++
		case m.keys.Down.matches(k):
			m.logScroll = max(0, m.logScroll-1)
		case m.keys.Help.matches(k):
			m.mode = modeHelp
		case m.keys.Quit.matches(k):
			return m.quit()
		}
		return m, nil
	}
	switch {
	case m.keys.Quit.matches(k):
		return m.quit()
	case m.keys.Help.matches(k):
		m.mode = modeHelp
	case m.keys.Back.matches(k):
		m.filter, m.status = "", ""
	case m.keys.Filter.matches(k):
		m.filtering, m.filter = true, ""
	case m.keys.NextPane.matches(k):
		m.focus = (m.focus + 1) % numPanes
	case m.keys.PrevPane.matches(k):
		m.focus = (m.focus + numPanes - 1) % numPanes
	case m.keys.Up.matches(k):
		m.sel[m.focus] = max(0, m.sel[m.focus]-1)
	case m.keys.Down.matches(k):
		m.sel[m.focus]++
		m.clampSelection()
	case m.keys.Drain.matches(k):
		op := control.Drain
		if m.snap.Machine.Paused {
			op = control.Resume
		}
		return m, m.do(control.Command{Op: op})
	case m.keys.Toggle.matches(k):
		return m.toggle()
	case m.keys.Restart.matches(k):
		if svc, ok := m.selectedService(); ok {
			return m, m.do(control.Command{Op: control.RestartService, Service: svc.Name})
		}
		m.status = "no service selected: tab to the Services pane"
	case m.keys.Logs.matches(k):
		svc, ok := m.selectedService()
		if !ok {
			m.status = "no service selected: tab to the Services pane"
			return m, nil
		}
		m.mode, m.logService, m.logs, m.logScroll, m.follow = modeLogs, svc.Name, nil, 0, true
		return m, tea.Batch(m.do(control.Command{Op: control.Logs, Service: svc.Name, Lines: 2000}), m.newLogTicks())
	}
	return m, nil
}

func (m *Model) quit() (tea.Model, tea.Cmd) {
	if m.opts.InProcess && !m.closed {
		m.mode = modeQuit
		return m, nil
	}
	m.outcome = Quit
	return m, tea.Quit
}

// toggle asks the core to disable an enabled connector (confirming first when jobs are in
// flight) or to enable a disabled one.
func (m *Model) toggle() (tea.Model, tea.Cmd) {
	conns := m.connectors()
	if len(conns) == 0 {
		m.status = "no connector to toggle"
		return m, nil
	}
	c := conns[0]
	if m.focus == paneConnectors {
		c = conns[min(m.sel[paneConnectors], len(conns)-1)]
	}
	if c.State == state.ConnectorDisabled || (c.State == state.ConnectorFailed && c.Slots == 0) {
		return m, m.do(control.Command{Op: control.EnableConnector, Connector: c.Name})
	}
	cmd := control.Command{Op: control.DisableConnector, Connector: c.Name}
	if c.Busy > 0 {
		m.mode, m.confirm = modeConfirm, cmd
		m.question = "disable " + c.Name + " with " + plural(c.Busy, "job") + " in flight? They finish (or go back to the queue after the drain timeout). y/n"
		return m, nil
	}
	return m, m.do(cmd)
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return itoa(n) + " " + word + "s"
}

func (m *Model) match(fields ...string) bool {
	if m.filter == "" {
		return true
	}
	return strings.Contains(strings.ToLower(strings.Join(fields, " ")), strings.ToLower(m.filter))
}

func (m *Model) services() []control.Service {
	var out []control.Service
	for _, s := range m.snap.Services {
		if m.focus != paneServices || m.match(s.Name, s.State, s.Error) {
			out = append(out, s)
		}
	}
	return out
}

func (m *Model) connectors() []control.Connector {
	var out []control.Connector
	for _, c := range m.snap.Connectors {
		if m.focus != paneConnectors || m.match(c.Name, string(c.State)) {
			out = append(out, c)
		}
	}
	return out
}

func (m *Model) jobs() []control.Job {
	var out []control.Job
	for _, j := range m.snap.Jobs {
		if m.focus != paneJobs || m.match(j.ID, j.Service, j.Slot, j.Message) {
			out = append(out, j)
		}
	}
	return out
}

func (m *Model) selectedService() (control.Service, bool) {
	svcs := m.services()
	if len(svcs) == 0 {
		return control.Service{}, false
	}
	i := 0
	if m.focus == paneServices {
		i = min(m.sel[paneServices], len(svcs)-1)
	}
	return svcs[i], true
}

func (m *Model) clampSelection() {
	counts := [numPanes]int{len(m.snap.GPUs), len(m.services()), len(m.connectors()), len(m.jobs()) + len(m.snap.Recent), 1}
	for p := range numPanes {
		m.sel[p] = max(0, min(m.sel[p], counts[p]-1))
	}
}

// Screen names one of the console's screens, for Frame.
type Screen int

const (
	MainScreen Screen = iota
	HelpScreen
	LogsScreen
)

// Frame renders one screen of a snapshot at a size exactly as the console draws it; logs are
// the lines of service for the logs screen. Screenshots and the frame-time benchmark use it.
func Frame(snap control.Snapshot, screen Screen, service string, logs []string, width, height int) string {
	m := New(nil, Options{})
	m.snap, m.have, m.width, m.height = snap, true, width, height
	switch screen {
	case HelpScreen:
		m.mode = modeHelp
	case LogsScreen:
		m.mode, m.logService, m.logs = modeLogs, service, logs
	case MainScreen:
		m.ext.tail, m.ext.tailService = logs, service
	}
	return m.render()
}

// ProgramOptions are the options every console program runs with.
//
// The console draws on change only. Its Update marks the frame dirty only for messages that
// change something (a snapshot, a key, a click or wheel, a resize, a log tail that differs), and
// View returns the cached frame otherwise (ext.go), so the renderer's "unchanged" check is a
// string compare. Bubble Tea v2.1.1 itself flushes on a ticker at the FPS whatever happens, so
// an idle console woke 120 times a second (2–3 % of a core) and a lower FPS delayed keys by up
// to a tick. The copy in third_party/bubbletea (PATCH.md) draws a rendered view at once when
// the last frame is at least one frame interval old, and at the end of the interval otherwise,
// and sleeps while nothing is rendered. So 120 is only the ceiling for bursts: an idle console
// draws once per snapshot (the machine sends one every 2 s when idle, each with the new
// samples; core/control's DefaultInterval), and only the lines that changed, and a key reaches
// the screen within its update and one draw. make bench measures the idle CPU and key → frame
// latency.
func ProgramOptions() []tea.ProgramOption { return []tea.ProgramOption{tea.WithFPS(120)} }
