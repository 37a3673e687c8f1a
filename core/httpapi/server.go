package httpapi

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// Limits bound what clients can hold of the HTTP server, so that no number of slow or idle
// connections can take the file descriptors Redis and the services need.
type Limits struct {
	// MaxConns caps the open connections. A newcomer at the cap closes the connection that has
	// waited longest without a request in progress (idle keep-alive, or headers not yet read):
	// an idle connection never holds a slot a probe needs. When every connection is running a
	// request the newcomer is closed at once.
	MaxConns          int
	ReadHeaderTimeout time.Duration // a client has this long to send its request's headers
	ReadTimeout       time.Duration // the whole request, body included
	WriteTimeout      time.Duration // the whole answer
	IdleTimeout       time.Duration // a keep-alive connection without a request is closed after this
	MaxHeaderBytes    int
}

// DefaultLimits are generous for probes, scrapers and the monitor, and small next to the file
// descriptors a process has.
var DefaultLimits = Limits{
	MaxConns: 256, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second,
	WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10,
}

// Server is the machine's HTTP server: a handler behind timeouts and a connection cap.
type Server struct {
	srv   *http.Server
	conns *connLimiter
}

// NewServer serves h within lim; zero fields of lim take DefaultLimits' values.
func NewServer(h http.Handler, lim Limits) *Server {
	d := DefaultLimits
	lim.MaxConns = orDefault(lim.MaxConns, d.MaxConns)
	lim.MaxHeaderBytes = orDefault(lim.MaxHeaderBytes, d.MaxHeaderBytes)
	lim.ReadHeaderTimeout = orDefault(lim.ReadHeaderTimeout, d.ReadHeaderTimeout)
	lim.ReadTimeout = orDefault(lim.ReadTimeout, d.ReadTimeout)
	lim.WriteTimeout = orDefault(lim.WriteTimeout, d.WriteTimeout)
	lim.IdleTimeout = orDefault(lim.IdleTimeout, d.IdleTimeout)
	conns := &connLimiter{max: lim.MaxConns, open: map[net.Conn]*connEntry{}, freed: make(chan struct{}, 1)}
	return &Server{conns: conns, srv: &http.Server{
		Handler: h, ReadHeaderTimeout: lim.ReadHeaderTimeout, ReadTimeout: lim.ReadTimeout,
		WriteTimeout: lim.WriteTimeout, IdleTimeout: lim.IdleTimeout, MaxHeaderBytes: lim.MaxHeaderBytes,
		ConnState: conns.track,
	}}
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Serve accepts connections on ln until Shutdown or Close; it returns http.ErrServerClosed then.
func (s *Server) Serve(ln net.Listener) error {
	return s.srv.Serve(&limitListener{Listener: ln, conns: s.conns})
}

// Shutdown stops accepting and waits for running requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// Close closes the listener and every connection at once.
func (s *Server) Close() error { return s.srv.Close() }

// OpenConns is how many connections the server holds now.
func (s *Server) OpenConns() int {
	s.conns.mu.Lock()
	defer s.conns.mu.Unlock()
	return len(s.conns.open)
}

// connLimiter counts the server's connections and knows which ones are running a request
// (http.Server reports each connection's state through ConnState).
type connLimiter struct {
	max int

	mu   sync.Mutex
	open map[net.Conn]*connEntry
	seq  uint64 // orders connections by when they last became evictable

	freed chan struct{} // signalled when a connection becomes idle or closes
}

type connEntry struct {
	busy  bool   // a request is being handled
	since uint64 // when it last became evictable
}

// admit makes room for c: at the cap it closes the connection that has waited longest
// without a request in progress, or refuses c when every connection is busy.
func (l *connLimiter) admit(c net.Conn) bool {
	l.mu.Lock()
	var victim net.Conn
	if len(l.open) >= l.max {
		var oldest uint64
		for conn, e := range l.open {
			if !e.busy && (victim == nil || e.since < oldest) {
				victim, oldest = conn, e.since
			}
		}
		if victim == nil {
			l.mu.Unlock()
			return false
		}
		delete(l.open, victim)
	}
	l.seq++
	l.open[c] = &connEntry{since: l.seq}
	l.mu.Unlock()
	if victim != nil {
		_ = victim.Close()
	}
	return true
}

// track follows the server's view of each connection.
func (l *connLimiter) track(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.open[c]
	switch {
	case st == http.StateClosed || st == http.StateHijacked:
		delete(l.open, c)
		l.signal()
	case !ok: // evicted, or refused: the server finds out when it next reads
	case st == http.StateActive:
		e.busy = true
	case st == http.StateIdle:
		l.seq++
		e.busy, e.since = false, l.seq
		l.signal()
	}
}

func (l *connLimiter) signal() {
	select {
	case l.freed <- struct{}{}:
	default:
	}
}

// busyWait is how long a newcomer waits, when every connection is running a request, for one
// to finish before it is refused: a keep-alive connection that has just written its answer is
// marked idle a moment after the client has read it.
const busyWait = 250 * time.Millisecond

// limitListener admits each accepted connection through the limiter. It never waits on idle
// connections, so a probe's connection is never stuck in the kernel's queue behind them; only
// when every connection is running a request does it wait, at most busyWait, for one to end.
type limitListener struct {
	net.Listener
	conns *connLimiter
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.conns.admit(c) {
			return c, nil
		}
		if l.waitAdmit(c) {
			return c, nil
		}
		_ = c.Close()
	}
}

// waitAdmit retries admitting c while connections become idle or close, for at most busyWait.
func (l *limitListener) waitAdmit(c net.Conn) bool {
	deadline := time.NewTimer(busyWait)
	defer deadline.Stop()
	for {
		select {
		case <-l.conns.freed:
			if l.conns.admit(c) {
				return true
			}
		case <-deadline.C:
			return l.conns.admit(c)
		}
	}
}
