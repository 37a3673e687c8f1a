package netguard_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/netguard"
)

func TestCheckClosesEveryNonPublicRange(t *testing.T) {
	var strict netguard.Policy
	for _, tc := range []struct {
		addr   string
		reason string // "" means open
	}{
		{"127.0.0.1:80", "loopback"},
		{"127.9.9.9:80", "loopback"},
		{"0.0.0.0:9090", "reaches this machine"},
		{"10.1.2.3:80", "private"},
		{"172.16.0.1:80", "private"},
		{"172.31.255.255:80", "private"},
		{"192.168.1.1:80", "private"},
		{"100.64.0.1:80", "carrier-grade NAT"},
		{"169.254.169.254:80", "metadata"},
		{"224.0.0.1:80", "multicast"},
		{"255.255.255.255:80", "broadcast"},
		{"198.18.0.1:80", "benchmarking"},
		{"[::1]:80", "loopback"},
		{"[::]:80", "unspecified"},
		{"[fe80::1]:80", "link-local"},
		{"[fe80::1%25eth0]:80", "link-local"},
		{"[fd12::1]:80", "unique local"},
		{"[ff02::1]:80", "multicast"},
		{"[::ffff:127.0.0.1]:80", "loopback"},
		{"[::ffff:169.254.169.254]:80", "metadata"},
		{"[64:ff9b::a9fe:a9fe]:80", "wrapping 169.254.169.254"},
		{"[2002:7f00:1::]:80", "wrapping 127.0.0.1"},
		{"8.8.8.8:443", ""},
		{"1.1.1.1:80", ""},
		{"172.32.0.1:80", ""},
		{"[2606:4700::1111]:443", ""},
		{"[64:ff9b::808:808]:443", ""},
	} {
		ap, err := netip.ParseAddrPort(strings.Replace(tc.addr, "%25", "%", 1))
		if err != nil {
			t.Fatal(err)
		}
		err = strict.Check(ap)
		switch {
		case tc.reason == "" && err != nil:
			t.Errorf("%s refused: %v", tc.addr, err)
		case tc.reason != "" && (err == nil || !strings.Contains(err.Error(), tc.reason)):
			t.Errorf("%s: err = %v, want a refusal mentioning %q", tc.addr, err, tc.reason)
		}
	}
}

func TestAllowListOpensOnlyWhatItNames(t *testing.T) {
	allow, err := netguard.ParseAllowList(" 127.0.0.1 , 10.20.0.0/16,fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	p := netguard.Policy{Allow: allow, LocalPorts: []uint16{9222}}
	for addr, open := range map[string]bool{
		"127.0.0.1:8080": true, "127.0.0.2:8080": false, "10.20.3.4:80": true, "10.21.0.1:80": false,
		"[fd00::5]:80": true, "169.254.169.254:80": false,
		"127.0.0.1:9222": false, "0.0.0.0:9222": false, // the DevTools port stays closed whatever is allowed
	} {
		if err := p.Check(netip.MustParseAddrPort(addr)); (err == nil) != open {
			t.Errorf("%s: err = %v, want open=%v", addr, err, open)
		}
	}
	for _, bad := range []string{"localhost", "10.0.0.0/33", "example.com", "fe80::1%eth0", "1.2.3"} {
		if _, err := netguard.ParseAllowList(bad); err == nil || !strings.Contains(err.Error(), "not an IP address or a CIDR") {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
}

func get(c *http.Client, u string) (string, error) {
	resp, err := c.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// listenOn serves h on ip (a loopback address other than 127.0.0.1 plays a host the
// allow-list names) and returns its URL.
func listenOn(t *testing.T, ip string, h http.Handler) string {
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

func TestTransportRefusesAfterResolutionAndOnRedirects(t *testing.T) {
	secret := listenOn(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "secret") }))
	allowed := listenOn(t, "127.0.0.2", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, secret+"/latest/meta-data", http.StatusFound)
	}))
	port := strings.TrimPrefix(secret, "http://127.0.0.1:")
	strict := &http.Client{Transport: netguard.Policy{}.Transport()}
	for _, u := range []string{secret, "http://localhost:" + port, "http://169.254.169.254/latest/meta-data/", "http://[::ffff:127.0.0.1]:" + port} {
		_, err := get(strict, u)
		re, ok := netguard.IsRefused(err)
		if !ok || !strings.Contains(err.Error(), "closed to jobs") || !strings.Contains(err.Error(), netguard.Setting) {
			t.Errorf("%s: err = %v", u, err)
			continue
		}
		if strings.Contains(u, "localhost") && !strings.Contains(re.Error(), "(localhost:"+port+")") {
			t.Errorf("the refusal does not name the host asked for: %v", re)
		}
	}

	// 127.0.0.2 is allowed, and redirects to 127.0.0.1, which is not.
	narrow := &http.Client{Transport: netguard.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}.Transport()}
	if _, err := get(narrow, allowed); err == nil || !strings.Contains(err.Error(), "127.0.0.1:"+port+" is closed to jobs") {
		t.Errorf("redirect to loopback: err = %v", err)
	}
	open := &http.Client{Transport: netguard.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}.Transport()}
	if body, err := get(open, allowed); err != nil || body != "secret" {
		t.Errorf("with loopback allowed: %q, %v", body, err)
	}
}

func TestProxyForwardsWhatIsOpenAndRemembersRefusals(t *testing.T) {
	site := listenOn(t, "127.0.0.2", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	secret := listenOn(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "secret") }))
	x, err := netguard.StartProxy(netguard.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	pu, _ := url.Parse(x.URL())
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}

	if body, err := get(c, site+"/a"); err != nil || body != "hello /a" {
		t.Fatalf("through the proxy: %q, %v", body, err)
	}
	if x.Refused() != nil {
		t.Fatalf("refused %v", x.Refused())
	}
	resp, err := c.Get(secret)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || strings.Contains(string(body), "secret") || !strings.Contains(string(body), "closed to jobs") {
		t.Errorf("plain request to loopback: %s %q", resp.Status, body)
	}
	if re := x.Refused(); re == nil || !strings.Contains(re.Error(), "loopback") {
		t.Errorf("Refused() = %v", re)
	}

	// CONNECT: a tunnel to the allowed host carries bytes; one to loopback is refused.
	conn, err := net.Dial("tcp", pu.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	host := strings.TrimPrefix(site, "http://")
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\nGET /tunnelled HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host, host, host)
	br := bufio.NewReader(conn)
	tr, err := http.ReadResponse(br, nil)
	if err != nil || tr.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %v %v", tr, err)
	}
	inner, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(inner.Body)
	if string(b) != "hello /tunnelled" {
		t.Errorf("through the tunnel: %q", b)
	}

	req, _ := http.NewRequestWithContext(context.Background(), http.MethodConnect, x.URL(), nil)
	req.Host = "localhost:" + strings.TrimPrefix(secret, "http://127.0.0.1:")
	resp, err = http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("CONNECT to localhost: %s", resp.Status)
	}
}

func TestProxyCannotReachItselfOrDevTools(t *testing.T) {
	x, err := netguard.StartProxy(netguard.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, LocalPorts: []uint16{9222}})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	for _, target := range []string{strings.TrimPrefix(x.URL(), "http://"), "127.0.0.1:9222", "0.0.0.0:9222"} {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodConnect, x.URL(), nil)
		req.Host = target
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "never open to jobs") {
			t.Errorf("CONNECT %s: %s %q", target, resp.Status, body)
		}
	}
}
