package playwright_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors/playwright"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/netguard"
	"github.com/emp-job-queue/machine/installers/browser"
	"github.com/emp-job-queue/machine/internal/testutil"
)

// browserProc is a Chromium the test started as the machine's supervisor does.
type browserProc struct {
	addr string // DevTools, http://127.0.0.1:port
	pgid int
	log  *bytes.Buffer
}

// chromium starts the real Debian Chromium (make test installs it) as the machine's
// supervisor does: browser.Flags with its sandbox, as an unprivileged user when the test runs
// as root, DevTools on a free port. It returns the DevTools address.
func chromium(t testing.TB) string { return startChromium(t).addr }

func startChromium(t testing.TB) *browserProc {
	t.Helper()
	b, err := browser.Find(context.Background(), false)
	if err != nil {
		t.Fatalf("the browser connector is tested against real Chromium: %v", err)
	}
	cred, err := browser.Credential(config.DefaultBrowserUser)
	if err != nil {
		t.Fatal(err)
	}
	profile, err := browser.PrepareProfile(filepath.Join(t.TempDir(), "profile"), cred)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(profile) })
	port, err := testutil.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(b.Path, browser.Flags(browser.Options{Port: port, ProfileDir: profile, Sandbox: true})...)
	cmd.Env = append(os.Environ(), "HOME="+profile)
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	addr := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(addr + "/json/version"); err == nil {
			resp.Body.Close()
			return &browserProc{addr: addr, pgid: cmd.Process.Pid, log: out}
		}
		if time.Now().After(deadline) || cmd.ProcessState != nil {
			t.Fatalf("Chromium did not open DevTools within 30 s (with its sandbox: a host without user namespaces cannot give it one); its output:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// loopback lets jobs reach the test's servers on 127.0.0.1, as an operator's allow-list would.
var loopback = netguard.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}

func run(t testing.TB, c *playwright.Connector, payload string) (job.Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return c.Run(ctx, &job.Job{ID: "b1", Service: "playwright", Payload: json.RawMessage(payload)}, func(job.Progress) {})
}

func decode(t testing.TB, res job.Result) image.Image {
	t.Helper()
	path := strings.TrimPrefix(res.Data.(map[string]any)["image_url"].(string), "file://")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	return img
}

func TestBrowserJobs(t *testing.T) {
	addr := chromium(t)
	c := playwright.New(playwright.Settings{DebugURL: addr, Assets: assets.Store{Dir: t.TempDir()}, Network: loopback})

	t.Run("html at width×height", func(t *testing.T) {
		res, err := run(t, c, `{"type":"html","html":"<div id=x></div>","css":"body{background:#ff0000}","width":320,"height":200}`)
		if err != nil {
			t.Fatal(err)
		}
		img := decode(t, res)
		if b := img.Bounds(); b.Dx() != 320 || b.Dy() != 200 {
			t.Errorf("size %v, want 320×200", b)
		}
		if r, g, bl, _ := img.At(10, 10).RGBA(); r>>8 < 240 || g>>8 > 20 || bl>>8 > 20 {
			t.Errorf("pixel = %d,%d,%d; want red", r>>8, g>>8, bl>>8)
		}
	})
	t.Run("js drawing on a canvas", func(t *testing.T) {
		code := `const c=document.createElement('canvas');c.width=100;c.height=80;document.body.appendChild(c);` +
			`const x=c.getContext('2d');x.fillStyle='#0000ff';x.fillRect(0,0,100,80);`
		res, err := run(t, c, fmt.Sprintf(`{"type":"js","code":%q,"width":100,"height":80}`, code))
		if err != nil {
			t.Fatal(err)
		}
		if r, g, b, _ := decode(t, res).At(50, 40).RGBA(); b>>8 < 240 || r>>8 > 20 || g>>8 > 20 {
			t.Errorf("pixel = %d,%d,%d; want blue", r>>8, g>>8, b>>8)
		}
	})
	t.Run("screenshot of a URL", func(t *testing.T) {
		site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, `<html><body style="background:#00ff00"><h1>hello</h1></body></html>`)
		}))
		defer site.Close()
		res, err := run(t, c, fmt.Sprintf(`{"type":"screenshot","url":%q,"width":400,"height":300}`, site.URL))
		if err != nil {
			t.Fatal(err)
		}
		if r, g, b, _ := decode(t, res).At(390, 290).RGBA(); g>>8 < 240 || r>>8 > 20 || b>>8 > 20 {
			t.Errorf("pixel = %d,%d,%d; want green", r>>8, g>>8, b>>8)
		}
	})
	t.Run("pdf", func(t *testing.T) {
		res, err := run(t, c, `{"type":"pdf","html":"<h1>invoice</h1>"}`)
		if err != nil {
			t.Fatal(err)
		}
		path := strings.TrimPrefix(res.Data.(map[string]any)["image_url"].(string), "file://")
		if b, _ := os.ReadFile(path); !bytes.HasPrefix(b, []byte("%PDF")) || res.Data.(map[string]any)["mime_type"] != "application/pdf" {
			t.Errorf("not a PDF: %q", b[:min(len(b), 8)])
		}
	})
	t.Run("a 1 MB document", func(t *testing.T) {
		big := "var x = '" + strings.Repeat("a", 1000000) + "'; document.body.style.background='#0000ff';"
		res, err := run(t, c, fmt.Sprintf(`{"type":"js","code":%q,"width":100,"height":80}`, big))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, b, _ := decode(t, res).At(50, 40).RGBA(); b>>8 < 240 {
			t.Error("the large document did not render")
		}
	})
	t.Run("p5 sketch", func(t *testing.T) {
		lib, _ := filepath.Abs("../../../.cache/p5/p5.min.js")
		if v := os.Getenv("PLAYWRIGHT_P5_JS"); v != "" {
			lib = v
		}
		if _, err := os.Stat(lib); err != nil {
			t.Fatalf("p5 jobs are tested with the real p5.js, which make test fetches into .cache/p5 (npm pack p5): %v", err)
		}
		p5 := playwright.New(playwright.Settings{DebugURL: addr, P5JS: lib, Assets: assets.Store{Dir: t.TempDir()}})
		sketch := `function setup(){ createCanvas(120, 90); background(0, 255, 0); noLoop(); }`
		res, err := run(t, p5, fmt.Sprintf(`{"type":"p5","code":%q,"width":120,"height":90}`, sketch))
		if err != nil {
			t.Fatal(err)
		}
		if r, g, b, _ := decode(t, res).At(60, 45).RGBA(); g>>8 < 240 || r>>8 > 20 || b>>8 > 20 {
			t.Errorf("pixel = %d,%d,%d; want the sketch's green", r>>8, g>>8, b>>8)
		}
	})
	t.Run("bad input is permanent", func(t *testing.T) {
		for _, p := range []string{`{"type":"gif"}`, `{"type":"screenshot"}`, `{"type":"screenshot","url":"file:///etc/passwd"}`,
			`{"type":"p5","code":"function setup(){}"}`, `{"type":"html","width":99999}`} {
			if _, err := run(t, c, p); !job.IsPermanent(err) {
				t.Errorf("%s: %v", p, err)
			}
		}
	})
}

func TestBrowserDownIsRetryable(t *testing.T) {
	c := playwright.New(playwright.Settings{DebugURL: "http://127.0.0.1:1", Assets: assets.Store{Dir: t.TempDir()}})
	_, err := run(t, c, `{"type":"html","html":"x"}`)
	if !errors.Is(err, playwright.ErrBrowserDown) || job.IsPermanent(err) {
		t.Fatalf("err = %v", err)
	}
}
