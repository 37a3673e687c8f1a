package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/core/httpapi"
	"github.com/emp-job-queue/machine/core/metrics"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/core/supervisor"
)

// handler is the machine's real handler over a real (empty) supervisor; changes counts the
// connector changes that got through.
func handler(t *testing.T, token string, changes *atomic.Int32) http.Handler {
	t.Helper()
	sup, err := supervisor.New(supervisor.Params{RunDir: t.TempDir(), LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	store := state.New("box", "", nil)
	store.SetPhase(state.Ready)
	store.BrokerReachable(true, nil)
	return httpapi.New(httpapi.Params{
		Store: store, Metrics: metrics.New().Handler(), Token: token, Version: "test", Services: sup,
		Do: func(context.Context, control.Command) control.Result {
			changes.Add(1)
			return control.Result{OK: true, Message: "done"}
		},
	})
}

type answer struct {
	code int
	body string
	hdr  http.Header
}

func do(t *testing.T, method, url string, hdr map[string]string) answer {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b), resp.Header}
}

var guardedRoutes = []struct{ method, path string }{
	{"POST", "/restart/service?service=comfyui-gpu0"},
	{"POST", "/connectors/simulation?action=enable"},
	{"GET", "/pm2/logs?service=comfyui-gpu0&lines=5"},
	{"GET", "/comfyui/logs?gpu=0&lines=5"},
}

// Without MACHINE_API_TOKEN the routes that change the machine or show its logs are off, with
// one sentence that says how to open them; nothing they would do happens.
func TestGuardedRoutesAreOffWithoutAToken(t *testing.T) {
	var changes atomic.Int32
	srv := httptest.NewServer(handler(t, "", &changes))
	defer srv.Close()
	for _, r := range guardedRoutes {
		a := do(t, r.method, srv.URL+r.path, map[string]string{"Authorization": "Bearer anything"})
		if a.code != http.StatusForbidden || !strings.Contains(a.body, "MACHINE_API_TOKEN is not set") {
			t.Errorf("%s %s without a configured token = %d %s, want 403 saying MACHINE_API_TOKEN is not set", r.method, r.path, a.code, a.body)
		}
	}
	if changes.Load() != 0 {
		t.Errorf("%d connector changes went through a closed route", changes.Load())
	}
	if a := do(t, "GET", srv.URL+"/health", nil); a.code != http.StatusOK {
		t.Errorf("/health = %d %s", a.code, a.body)
	}
}

// With a token: only Authorization: Bearer <token> opens them; a token in the URL is refused
// even when right; none of them sends CORS headers, while the read-only routes keep theirs.
func TestGuardedRoutesNeedTheBearerToken(t *testing.T) {
	const token = "s3cret-token-value"
	var changes atomic.Int32
	srv := httptest.NewServer(handler(t, token, &changes))
	defer srv.Close()
	bearer := map[string]string{"Authorization": "Bearer " + token, "Origin": "https://evil.example"}
	for _, r := range guardedRoutes {
		cases := []struct {
			name string
			path string
			hdr  map[string]string
			code int
			says string
		}{
			{"no header", r.path, nil, 401, "Authorization: Bearer"},
			{"wrong token", r.path, map[string]string{"Authorization": "Bearer s3cret-token-valuf"}, 401, "Authorization: Bearer"},
			{"a prefix of the token", r.path, map[string]string{"Authorization": "Bearer s3cret"}, 401, "Authorization: Bearer"},
			{"no Bearer scheme", r.path, map[string]string{"Authorization": token}, 401, "Authorization: Bearer"},
			{"basic scheme", r.path, map[string]string{"Authorization": "Basic " + token}, 401, "Authorization: Bearer"},
			{"token in the query", r.path + "&token=" + token, nil, 400, "must not be in the URL"},
			{"token in the query and header", r.path + "&access_token=" + token, bearer, 400, "must not be in the URL"},
		}
		for _, c := range cases {
			a := do(t, r.method, srv.URL+c.path, c.hdr)
			if a.code != c.code || !strings.Contains(a.body, c.says) {
				t.Errorf("%s %s, %s: %d %s; want %d saying %q", r.method, r.path, c.name, a.code, a.body, c.code, c.says)
			}
		}
		a := do(t, r.method, srv.URL+r.path, bearer)
		if a.code == 401 || a.code == 403 || a.code == 400 {
			t.Errorf("%s %s with the token = %d %s", r.method, r.path, a.code, a.body)
		}
		if v := a.hdr.Get("Access-Control-Allow-Origin"); v != "" {
			t.Errorf("%s %s answers with Access-Control-Allow-Origin %q", r.method, r.path, v)
		}
		pre := do(t, "OPTIONS", srv.URL+r.path, map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": r.method})
		if v := pre.hdr.Get("Access-Control-Allow-Origin"); v != "" {
			t.Errorf("preflight of %s answers with Access-Control-Allow-Origin %q", r.path, v)
		}
	}
	if changes.Load() != 1 {
		t.Errorf("%d connector changes went through; want only the one with the token", changes.Load())
	}
	if a := do(t, "GET", srv.URL+"/health", map[string]string{"Origin": "https://dash.example"}); a.hdr.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("/health lost its CORS header: %v", a.hdr)
	}
}

// idleConn opens a connection, asks one request on it, reads the answer and leaves it open:
// a keep-alive connection that holds a server slot while doing nothing.
func idleConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("idle connection's request: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return c
}

func serve(t *testing.T, h http.Handler, lim httpapi.Limits) (*httpapi.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpapi.NewServer(h, lim)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return srv, ln.Addr().String()
}

// Twice the cap of idle keep-alive connections, and as many that never send a byte, do not
// stop /health: the server closes the connections that wait longest for a request, and never
// holds more than the cap. (The timeouts are long here so that they play no part.)
func TestIdleConnectionsCannotStarveHealth(t *testing.T) {
	const maxConns = 4
	long := time.Hour
	srv, addr := serve(t, handler(t, "", new(atomic.Int32)), httpapi.Limits{MaxConns: maxConns,
		ReadHeaderTimeout: long, ReadTimeout: long, WriteTimeout: long, IdleTimeout: long})
	var idle []net.Conn
	for range 2 * maxConns {
		idle = append(idle, idleConn(t, addr))
	}
	for range 2 * maxConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + "/health")
	if err != nil {
		t.Fatalf("/health behind %d idle connections: %v", 4*maxConns, err)
	}
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 200 || body["healthy"] != true {
		t.Errorf("/health = %d %v", resp.StatusCode, body)
	}
	if n := srv.OpenConns(); n > maxConns {
		t.Errorf("the server holds %d connections, over its cap of %d", n, maxConns)
	}
	// The oldest idle connection was closed by the server.
	_ = idle[0].SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := idle[0].Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the oldest idle connection is still open (read: %v)", err)
	}
}

// A connection running a request is never the one closed to make room: the request finishes.
func TestBusyConnectionsAreNotEvicted(t *testing.T) {
	release, entered := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		fmt.Fprint(w, "ok")
	})
	_, addr := serve(t, h, httpapi.Limits{MaxConns: 2})
	slow := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "ok" {
				err = fmt.Errorf("answer %q", b)
			}
		}
		slow <- err
	}()
	<-entered
	for range 4 {
		idleConn(t, addr)
	}
	close(release)
	if err := <-slow; err != nil {
		t.Errorf("the running request was cut: %v", err)
	}
}
