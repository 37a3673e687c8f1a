package netguard

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"
)

// Proxy is an HTTP forward proxy on 127.0.0.1 (plain http:// requests and CONNECT tunnels,
// which carry https:// and WebSockets) whose every outgoing connection passes a Policy. The
// browser connector points each job's browser context at a proxy of its own, so the browser
// never connects anywhere itself: the proxy resolves names and checks the address it
// connects to, which closes DNS rebinding, redirects and subrequests alike. It remembers
// what it refused, so the job can fail saying so.
type Proxy struct {
	policy Policy // immutable after StartProxy
	ln     net.Listener
	srv    *http.Server
	rp     *httputil.ReverseProxy

	mu      sync.Mutex
	refused []*RefusedError
	tunnels map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup // tunnel copies
}

// maxRefusals is how many refusals a proxy keeps; the first is the one a job reports.
const maxRefusals = 16

// StartProxy listens on a free loopback port and serves until Close. The proxy's own port
// joins the policy's LocalPorts, so nothing can loop through it.
func StartProxy(p Policy) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start the job network proxy: %w", err)
	}
	p.LocalPorts = append(append([]uint16(nil), p.LocalPorts...), uint16(ln.Addr().(*net.TCPAddr).Port))
	x := &Proxy{policy: p, ln: ln, tunnels: map[net.Conn]struct{}{}}
	t := p.Transport()
	t.DisableCompression = true // pass the browser's Accept-Encoding and the answer through untouched
	x.rp = &httputil.ReverseProxy{
		Rewrite:   func(*httputil.ProxyRequest) {}, // the absolute URL is the target; hop-by-hop headers are dropped
		Transport: t,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			x.fail(w, r.URL.Host, err)
		},
	}
	x.srv = &http.Server{Handler: x, ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = x.srv.Serve(ln) }() // ends when Close closes the server
	return x, nil
}

// URL is the proxy's address, for --proxy-server or a browser context's proxyServer.
func (x *Proxy) URL() string { return "http://" + x.ln.Addr().String() }

// Refused returns the first connection the proxy refused, or nil.
func (x *Proxy) Refused() *RefusedError {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.refused) == 0 {
		return nil
	}
	return x.refused[0]
}

// Close stops the proxy and cuts its open tunnels.
func (x *Proxy) Close() error {
	x.mu.Lock()
	x.closed = true
	for c := range x.tunnels {
		_ = c.Close()
	}
	x.mu.Unlock()
	err := x.srv.Close()
	x.wg.Wait()
	return err
}

// ServeHTTP implements http.Handler.
func (x *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodConnect:
		x.tunnel(w, r)
	case r.URL.Scheme == "http" && r.URL.Host != "":
		x.rp.ServeHTTP(w, r)
	default:
		http.Error(w, "this proxy forwards absolute http:// URLs and CONNECT only", http.StatusBadRequest)
	}
}

// fail answers a request the proxy could not forward: 403 with the reason for a refusal.
func (x *Proxy) fail(w http.ResponseWriter, target string, err error) {
	if re, ok := IsRefused(err); ok {
		x.mu.Lock()
		if len(x.refused) < maxRefusals {
			x.refused = append(x.refused, re)
		}
		x.mu.Unlock()
		http.Error(w, re.Error(), http.StatusForbidden)
		return
	}
	http.Error(w, fmt.Sprintf("the proxy could not reach %s: %v", target, err), http.StatusBadGateway)
}

// tunnel serves CONNECT: it dials the target through the policy, then copies bytes both ways.
func (x *Proxy) tunnel(w http.ResponseWriter, r *http.Request) {
	target := r.Host
	if _, _, err := net.SplitHostPort(target); err != nil {
		target = net.JoinHostPort(target, "443")
	}
	up, err := x.policy.DialContext(r.Context(), "tcp", target)
	if err != nil {
		x.fail(w, target, err)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		_ = up.Close()
		http.Error(w, "this proxy cannot tunnel over this connection", http.StatusInternalServerError)
		return
	}
	down, buf, err := hj.Hijack()
	if err != nil {
		_ = up.Close()
		return
	}
	if !x.track(up, down) {
		return
	}
	defer x.untrack(up, down)
	if _, err := down.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		return
	}
	x.wg.Add(1)
	go func() { // browser → target (bytes the server's reader already buffered first)
		defer x.wg.Done()
		_, _ = io.Copy(up, io.MultiReader(bufferedOf(buf.Reader), down))
		closeWrite(up)
	}()
	_, _ = io.Copy(down, up) // target → browser
	closeWrite(down)
}

// track registers a tunnel's connections so Close can cut them; false (and both closed)
// once the proxy is closed.
func (x *Proxy) track(cs ...net.Conn) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		for _, c := range cs {
			_ = c.Close()
		}
		return false
	}
	x.wg.Add(1)
	for _, c := range cs {
		x.tunnels[c] = struct{}{}
	}
	return true
}

func (x *Proxy) untrack(cs ...net.Conn) {
	x.mu.Lock()
	for _, c := range cs {
		_ = c.Close()
		delete(x.tunnels, c)
	}
	x.mu.Unlock()
	x.wg.Done()
}

func bufferedOf(r *bufio.Reader) io.Reader {
	b, _ := r.Peek(r.Buffered())
	return bytes.NewReader(b)
}

// closeWrite half-closes c so the other side sees the end of this direction.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}
