package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// message is one line of the wire protocol.
type message struct {
	V        int       `json:"v,omitempty"`
	Interval int64     `json:"interval_ms,omitempty"` // a console's hello: its reading interval
	Ping     bool      `json:"ping,omitempty"`        // a client's keep-alive; nothing answers it
	Snapshot *Snapshot `json:"snapshot,omitempty"`
	ID       int64     `json:"id,omitempty"`
	Command  *Command  `json:"command,omitempty"`
	Result   *Result   `json:"result,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// pacing spaces the snapshots sent to a console.
type pacing struct {
	event   time.Duration // after an event, so a burst of them is one snapshot
	reading time.Duration // at least, between snapshots that bring only new readings
}

// How often a console gets new readings (GPU telemetry, resources, the queue's depth) when
// nothing else happens. The default is 2 s, as btop and nvitop refresh, with every 1 Hz sample
// in each snapshot, so an idle console draws half as often as the sampler samples; a console
// may ask for 1 s (every sample as it comes) up to a minute (`machine console --interval`).
const (
	DefaultInterval = 2 * time.Second
	MinInterval     = time.Second
	MaxInterval     = time.Minute
)

// consolePacing is how snapshots go to a console that asked for readings every interval (0:
// DefaultInterval; out of bounds: the nearest bound): events within 0.1 s, so no more than
// 10 frames a second, and readings alone every interval.
func consolePacing(interval time.Duration) pacing {
	if interval == 0 {
		interval = DefaultInterval
	}
	return pacing{event: 100 * time.Millisecond, reading: min(max(interval, MinInterval), MaxInterval)}
}

// Timeouts of a connection to the socket: a client must say hello within HelloTimeout and then
// send something (a command, or a ping, which consoles send every IdleTimeout/4) at least every
// IdleTimeout, or it is dropped, so idle or stuck clients cannot pile up.
const (
	HelloTimeout = 5 * time.Second
	IdleTimeout  = 2 * time.Minute
)

// follow sends a snapshot now, then p.event after an event and at most every p.reading for
// new readings, until ctx ends.
func follow(ctx context.Context, core Core, p pacing, send func(Snapshot) bool) {
	events, readings, stop := core.Changes()
	defer stop()
	if !send(core.Snapshot()) {
		return
	}
	last := time.Now()
	var due time.Time // when the next snapshot goes; zero while nothing waits
	sooner := func(t time.Time) {
		if due.IsZero() || t.Before(due) {
			due = t
		}
	}
	for {
		var fire <-chan time.Time
		if !due.IsZero() {
			fire = time.After(time.Until(due))
		}
		select {
		case <-ctx.Done():
			return
		case <-events:
			sooner(time.Now().Add(p.event))
		case <-readings:
			sooner(time.Now().Add(max(p.event, p.reading-time.Since(last))))
		case <-fire:
			if !send(core.Snapshot()) {
				return
			}
			last, due = time.Now(), time.Time{}
		}
	}
}

// latest is a one-slot channel that always holds the newest snapshot.
func pushLatest(ch chan Snapshot, s Snapshot) {
	for {
		select {
		case ch <- s:
			return
		default:
			select {
			case <-ch:
			default:
			}
		}
	}
}

// local is the in-memory transport.
type local struct {
	core    Core
	updates chan Snapshot
	cancel  context.CancelFunc
	done    chan struct{}
}

// Local connects a console to a core in the same process, with new readings every interval
// (0: DefaultInterval).
func Local(core Core, interval time.Duration) Client {
	ctx, cancel := context.WithCancel(context.Background())
	l := &local{core: core, updates: make(chan Snapshot, 1), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		defer close(l.updates)
		follow(ctx, core, consolePacing(interval), func(s Snapshot) bool { pushLatest(l.updates, s); return true })
	}()
	return l
}

func (l *local) Updates() <-chan Snapshot { return l.updates }

func (l *local) Do(ctx context.Context, c Command) (Result, error) { return l.core.Do(ctx, c), nil }

func (l *local) Close() error {
	l.cancel()
	<-l.done
	return nil
}

// Server serves a core on a unix socket.
type Server struct {
	core Core
	path string
	ln   net.Listener
	log  *slog.Logger
	// HelloTimeout and IdleTimeout default to the package's; tests shorten them before Serve.
	HelloTimeout, IdleTimeout time.Duration
}

// Listen opens the control socket (mode 0600). A socket left by a machine that is gone is
// replaced; one that answers belongs to a running machine and is an error.
func Listen(path string, core Core, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create control socket directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("another machine is already running with control socket %s; stop it, or set MACHINE_CONTROL_SOCKET", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("open control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict control socket %s: %w", path, err)
	}
	return &Server{core: core, path: path, ln: ln, log: log, HelloTimeout: HelloTimeout, IdleTimeout: IdleTimeout}, nil
}

// Serve accepts consoles until ctx ends, then closes them and removes the socket.
func (s *Server) Serve(ctx context.Context) {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			break
		}
		wg.Go(func() { s.serve(ctx, conn) })
	}
	wg.Wait()
	_ = os.Remove(s.path)
}

func (s *Server) serve(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	in := bufio.NewScanner(conn)
	in.Buffer(make([]byte, 64<<10), 1<<20)
	var writeMu sync.Mutex
	enc := json.NewEncoder(conn)
	write := func(m message) bool {
		writeMu.Lock()
		defer writeMu.Unlock()
		_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		return enc.Encode(m) == nil
	}
	_ = conn.SetReadDeadline(time.Now().Add(s.HelloTimeout))
	if !in.Scan() {
		return
	}
	var hello message
	if json.Unmarshal(in.Bytes(), &hello) != nil || hello.V != Version {
		write(message{Error: fmt.Sprintf("this machine speaks control protocol version %d; update the console (got %q)", Version, in.Text())})
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		follow(ctx, s.core, consolePacing(time.Duration(hello.Interval)*time.Millisecond), func(snap Snapshot) bool {
			if !write(message{Snapshot: &snap}) {
				cancel()
				return false
			}
			return true
		})
	})
	for {
		_ = conn.SetReadDeadline(time.Now().Add(s.IdleTimeout))
		if !in.Scan() {
			break
		}
		var m message
		if json.Unmarshal(in.Bytes(), &m) == nil && m.Ping {
			continue
		}
		if json.Unmarshal(in.Bytes(), &m) != nil || m.Command == nil {
			write(message{ID: m.ID, Result: &Result{Error: "not a command: send {\"id\":n,\"command\":{\"op\":…}}"}})
			continue
		}
		wg.Go(func() {
			res := s.core.Do(ctx, *m.Command)
			write(message{ID: m.ID, Result: &res})
		})
	}
	cancel()
}

// remote is a console attached over the socket.
type remote struct {
	conn    net.Conn
	updates chan Snapshot
	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan Result
	enc     *json.Encoder
	done    chan struct{}
}

// ErrNoCore says no machine answers on the socket.
var ErrNoCore = errors.New("no running machine")

// Dial attaches to the machine serving path and asks for new readings every interval (0:
// DefaultInterval).
func Dial(ctx context.Context, path string, interval time.Duration) (Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("%w answers on control socket %s (%v): start one with `machine`, or set MACHINE_CONTROL_SOCKET to its socket", ErrNoCore, path, err)
	}
	r := &remote{conn: conn, updates: make(chan Snapshot, 1), pending: map[int64]chan Result{}, enc: json.NewEncoder(conn), done: make(chan struct{})}
	if err := r.enc.Encode(message{V: Version, Interval: interval.Milliseconds()}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("attach to %s: %w", path, err)
	}
	go r.read()
	go r.keepAlive()
	return r, nil
}

// keepAlive pings the server so an idle console is not taken for a stuck client.
func (r *remote) keepAlive() {
	t := time.NewTicker(IdleTimeout / 4)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
			r.mu.Lock()
			err := r.enc.Encode(message{Ping: true})
			r.mu.Unlock()
			if err != nil {
				return
			}
		}
	}
}

func (r *remote) read() {
	defer close(r.done)
	defer close(r.updates)
	in := bufio.NewScanner(r.conn)
	in.Buffer(make([]byte, 64<<10), 16<<20)
	for in.Scan() {
		var m message
		if json.Unmarshal(in.Bytes(), &m) != nil {
			continue
		}
		switch {
		case m.Snapshot != nil:
			pushLatest(r.updates, *m.Snapshot)
		case m.Result != nil:
			r.mu.Lock()
			ch := r.pending[m.ID]
			delete(r.pending, m.ID)
			r.mu.Unlock()
			if ch != nil {
				ch <- *m.Result
			}
		}
	}
}

func (r *remote) Updates() <-chan Snapshot { return r.updates }

func (r *remote) Do(ctx context.Context, c Command) (Result, error) {
	ch := make(chan Result, 1)
	r.mu.Lock()
	r.nextID++
	id := r.nextID
	r.pending[id] = ch
	err := r.enc.Encode(message{ID: id, Command: &c})
	r.mu.Unlock()
	if err != nil {
		return Result{}, fmt.Errorf("send command: %w", err)
	}
	select {
	case res := <-ch:
		return res, nil
	case <-r.done:
		return Result{}, fmt.Errorf("the machine closed the connection")
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

func (r *remote) Close() error {
	err := r.conn.Close()
	<-r.done
	return err
}
