package playwright_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/remote"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/connectors/playwright"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/netguard"
)

// serveOn serves h on ip:0 and returns its URL.
func serveOn(t *testing.T, ip string, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: h}}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// A browser job's page, its redirects and its subrequests reach only public addresses
// unless the operator allows more, and never the DevTools port. A refusal fails the job for
// good with one sentence that says what was refused. The "secret" server stands for the
// machine's HTTP port, a cloud metadata service or an internal API: it must see no request.
func TestJobPagesReachOnlyPublicAddresses(t *testing.T) {
	addr := chromium(t)
	var leaked atomic.Int32
	secret := serveOn(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Add(1)
		fmt.Fprint(w, `<html><body style="background:#ff0000">secret</body></html>`)
	}))
	secretTLS := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { leaked.Add(1) }))
	defer secretTLS.Close()
	port := strings.TrimPrefix(secret, "http://127.0.0.1:")
	// 127.0.0.2 plays a host the operator allowed (a narrow allow-list); it points at 127.0.0.1.
	allowed := serveOn(t, "127.0.0.2", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/redirect":
			http.Redirect(w, r, secret+"/latest/meta-data/", http.StatusFound)
		case "/subrequest":
			fmt.Fprintf(w, `<html><body><img src="%s/pixel.png"></body></html>`, secret)
		default:
			fmt.Fprint(w, `<html><body>fine</body></html>`)
		}
	}))
	strict := playwright.New(playwright.Settings{DebugURL: addr, Assets: assets.Store{Dir: t.TempDir()}})
	narrow := playwright.New(playwright.Settings{DebugURL: addr, Assets: assets.Store{Dir: t.TempDir()},
		Network: netguard.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}})
	wide := playwright.New(playwright.Settings{DebugURL: addr, Assets: assets.Store{Dir: t.TempDir()},
		Network: netguard.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}})
	devtoolsPort := strings.TrimPrefix(addr, "http://127.0.0.1:")

	for _, tc := range []struct {
		name    string
		c       *playwright.Connector
		payload string
		want    string
	}{
		{"a loopback URL", strict, fmt.Sprintf(`{"url":%q}`, secret+"/"), "127.0.0.1:" + port + " is closed to jobs: 127.0.0.1 is a loopback address"},
		{"https to loopback (a CONNECT tunnel)", strict, fmt.Sprintf(`{"url":%q}`, secretTLS.URL+"/"), "is a loopback address"},
		{"the cloud metadata endpoint", strict, `{"url":"http://169.254.169.254/latest/meta-data/"}`, "169.254.169.254:80 is closed to jobs"},
		{"a name resolving to loopback", strict, fmt.Sprintf(`{"url":"http://localhost:%s/"}`, port), "(localhost:" + port + ") is closed to jobs"},
		{"a private network", strict, `{"url":"http://10.255.255.1/"}`, "private address"},
		{"an allowed host redirecting to loopback", narrow, fmt.Sprintf(`{"url":%q}`, allowed+"/redirect"), "127.0.0.1:" + port + " is closed to jobs"},
		{"an allowed page loading from loopback", narrow, fmt.Sprintf(`{"url":%q}`, allowed+"/subrequest"), "127.0.0.1:" + port + " is closed to jobs"},
		{"a document loading from loopback", strict, fmt.Sprintf(`{"type":"html","html":"<img src='%s/x.png'>"}`, secret), "is a loopback address"},
		{"the DevTools port, whatever is allowed", wide, fmt.Sprintf(`{"url":%q}`, addr+"/json/list"), "port " + devtoolsPort + " is never open to jobs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := run(t, tc.c, tc.payload)
			if !job.IsPermanent(err) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "asked for an address it may not reach") {
				t.Fatalf("result %+v, err = %v; want a permanent refusal saying %q", res, err, tc.want)
			}
			if testing.Verbose() {
				t.Log(err)
			}
		})
	}
	if n := leaked.Load(); n != 0 {
		t.Errorf("the closed servers got %d requests", n)
	}
	// The allow-list is the operator's escape hatch: the same redirect loads when loopback is allowed.
	if _, err := run(t, wide, fmt.Sprintf(`{"url":%q}`, allowed+"/redirect")); err != nil || leaked.Load() == 0 {
		t.Errorf("with 127.0.0.0/8 allowed: %v (%d requests)", err, leaked.Load())
	}
}

// Every job gets a browser context of its own: a cookie and localStorage one job sets are
// gone for the next, even on the same site, and the next job sees no other job's tab.
func TestJobsDoNotShareBrowserState(t *testing.T) {
	addr := chromium(t)
	cookies := make(chan string, 1) // what the second job's page request carries
	site := serveOn(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/set":
			http.SetCookie(w, &http.Cookie{Name: "session", Value: "job-one", Path: "/", Expires: time.Now().Add(time.Hour)})
			fmt.Fprint(w, `<html><body><script>localStorage.setItem("k", "job-one")</script></body></html>`)
		case "/read":
			select {
			case cookies <- r.Header.Get("Cookie"):
			default:
			}
			// Green when nothing of the first job is visible, red otherwise.
			fmt.Fprint(w, `<html><body style="background:#00ff00"><script>
				if (localStorage.getItem("k") || document.cookie.includes("session")) document.body.style.background = "#ff0000";
			</script></body></html>`)
		}
	}))
	c := playwright.New(playwright.Settings{DebugURL: addr, Assets: assets.Store{Dir: t.TempDir()}, Network: loopback})
	if _, err := run(t, c, fmt.Sprintf(`{"url":%q,"width":100,"height":80}`, site+"/set")); err != nil {
		t.Fatal(err)
	}
	res, err := run(t, c, fmt.Sprintf(`{"url":%q,"width":100,"height":80}`, site+"/read"))
	if err != nil {
		t.Fatal(err)
	}
	if r, g, b, _ := decode(t, res).At(50, 40).RGBA(); g>>8 < 240 || r>>8 > 20 || b>>8 > 20 {
		t.Errorf("the second job saw the first job's localStorage or cookie (pixel %d,%d,%d)", r>>8, g>>8, b>>8)
	}
	if c := <-cookies; c != "" {
		t.Errorf("the second job sent the cookie %q", c)
	}
	// Only the browser's own first tab is left: each job's tab went with its context.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	alloc, cancelAlloc := remote.NewAllocator(ctx, addr)
	defer cancelAlloc()
	tab, closeTab := chromedp.NewContext(alloc)
	defer closeTab()
	if _, err := chromedp.Run(tab, chromedp.Navigate("about:blank")); err != nil {
		t.Fatal(err)
	}
	targets, err := chromedp.Targets(tab)
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range targets {
		if ti.Type == "page" && strings.Contains(ti.URL, site) {
			t.Errorf("a job's tab is still open: %s", ti.URL)
		}
	}
}

// Chromium runs with its sandbox: its renderers (where job scripts run) are confined by
// seccomp-bpf, which --no-sandbox turns off. As root the browser runs as nobody, since
// Chromium has no sandbox for root.
func TestBrowserRunsSandboxed(t *testing.T) {
	b := startChromium(t)
	c := playwright.New(playwright.Settings{DebugURL: b.addr, Assets: assets.Store{Dir: t.TempDir()}})
	// A job leaves a renderer behind only while it runs; the browser's own blank tab has one.
	if _, err := run(t, c, `{"type":"html","html":"<p>x</p>"}`); err != nil {
		t.Fatal(err)
	}
	renderers := 0
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if !strings.Contains(string(cmdline), "--type=renderer") || pgid(pid) != b.pgid {
			continue
		}
		renderers++
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if !strings.Contains(string(status), "Seccomp:\t2") {
			t.Errorf("renderer %d runs without seccomp-bpf (the sandbox is off)", pid)
		}
		if os.Geteuid() == 0 && strings.Contains(string(status), "Uid:\t0\t") {
			t.Errorf("renderer %d runs as root", pid)
		}
	}
	if renderers == 0 {
		t.Fatalf("no renderer of this browser found; its output:\n%s", b.log)
	}
}

// pgid is a process's group, from /proc/<pid>/stat.
func pgid(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 3 {
		return -1
	}
	g, _ := strconv.Atoi(fields[2])
	return g
}

// WebRTC's UDP is the one kind of traffic no HTTP proxy carries: the browser runs with UDP
// that is not proxied turned off, so a page cannot send STUN packets to an address of this
// machine (or of the private network). The page holds its load event until ICE gathering has
// ended or a packet arrived, so the job cannot end before the browser had every chance to send.
func TestWebRTCSendsNoUDP(t *testing.T) {
	own := ""
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ip := a.(*net.IPNet).IP; ip.To4() != nil && !ip.IsLoopback() {
			own = ip.String()
			break
		}
	}
	if own == "" {
		t.Skip("this host has no IPv4 address besides loopback to aim STUN at")
	}
	udp, err := net.ListenPacket("udp4", own+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	sent := make(chan string, 1)
	go func() { // ends when udp closes
		buf := make([]byte, 1500)
		if n, from, err := udp.ReadFrom(buf); err == nil {
			sent <- fmt.Sprintf("%d bytes from %s", n, from)
		}
	}()
	addr := chromium(t)
	gathered := make(chan struct{})
	var once atomic.Bool
	site := serveOn(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/done":
			if once.CompareAndSwap(false, true) {
				close(gathered)
			}
		case "/slow.png":
			select { // the page's load event waits for this image
			case <-gathered:
			case s := <-sent:
				sent <- s
			case <-time.After(30 * time.Second):
			}
		default:
			fmt.Fprintf(w, `<html><body><script>
				const pc = new RTCPeerConnection({iceServers: [{urls: "stun:%s"}]});
				pc.createDataChannel("x");
				pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") fetch("/done"); };
				pc.createOffer().then(o => pc.setLocalDescription(o));
			</script><img src="/slow.png"></body></html>`, udp.LocalAddr())
		}
	}))
	c := playwright.New(playwright.Settings{DebugURL: addr, Assets: assets.Store{Dir: t.TempDir()}, Network: loopback})
	if _, err := run(t, c, fmt.Sprintf(`{"url":%q}`, site+"/")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-sent:
		t.Fatalf("the page sent UDP to %s: %s", udp.LocalAddr(), s)
	case <-gathered:
	default:
		t.Fatal("the page never finished ICE gathering, so the test proves nothing")
	}
}
