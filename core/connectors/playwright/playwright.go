// Package playwright is the browser-automation connector: it drives the machine's supervised
// Chromium over the DevTools protocol (chromedp) to screenshot a URL or an HTML document, print
// a PDF, or render an HTML, JS or p5.js snippet at width×height into a PNG. The payload is the
// old system's planned one: {type: screenshot|pdf|html|js|p5, url | html/css/javascript | code,
// width, height}. A bounded number of tabs run at once; a browser that crashed is a retryable
// failure (the supervisor restarts it).
//
// Job pages are untrusted: they may open any URL and run any script. Each job therefore gets a
// browser context of its own (its own cookies, storage, cache and tabs, disposed with the
// job), whose every request goes through a filtering proxy of its own (netguard.Proxy): the
// proxy resolves names and connects only to addresses the network policy opens, so neither the
// page, its subrequests, its redirects nor a name that re-resolves (DNS rebinding) reaches
// this machine, its DevTools port, the cloud metadata endpoint or the private network. A
// refused request fails the job for good, saying what was refused.
//
// Why a proxy and not Fetch-domain interception: interception sees URLs, not the address the
// browser then connects to (a rebinding name passes the check and connects elsewhere), and it
// misses WebSocket handshakes and requests of workers it was not attached to. The proxy sees
// every connection the context makes, because it makes them.
package playwright

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/remote"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/netguard"
)

// Settings configure the connector.
type Settings struct {
	DebugURL string        // the browser's DevTools address, e.g. http://127.0.0.1:9222
	MaxTabs  int           // tabs at once (default 4)
	Timeout  time.Duration // one job (default 60 s)
	P5JS     string        // path of a local p5.min.js; p5 jobs need it (no CDN is reachable)
	Assets   assets.Saver
	Network  netguard.Policy // what job pages may reach (the zero value: public addresses only)
}

// Connector runs browser jobs.
type Connector struct {
	s    Settings
	tabs chan struct{}
}

// New returns a connector.
func New(s Settings) *Connector {
	if s.MaxTabs <= 0 {
		s.MaxTabs = 4
	}
	if s.Timeout <= 0 {
		s.Timeout = time.Minute
	}
	// The DevTools port controls every tab: no allow-list opens it to pages.
	if u, err := url.Parse(s.DebugURL); err == nil {
		if port, err := strconv.ParseUint(u.Port(), 10, 16); err == nil {
			s.Network.LocalPorts = append(append([]uint16(nil), s.Network.LocalPorts...), uint16(port))
		}
	}
	return &Connector{s: s, tabs: make(chan struct{}, s.MaxTabs)}
}

// Payload is a browser job.
type Payload struct {
	Type       string `json:"type"`
	URL        string `json:"url"`
	HTML       string `json:"html"`
	CSS        string `json:"css"`
	JavaScript string `json:"javascript"`
	Code       string `json:"code"`
	Width      int64  `json:"width"`
	Height     int64  `json:"height"`
	FullPage   bool   `json:"full_page"`
}

// ErrBrowserDown says the browser is not reachable (starting, or crashed and restarting).
var ErrBrowserDown = errors.New("the browser is not reachable")

// Run implements connectors.Connector.
func (c *Connector) Run(ctx context.Context, j *job.Job, progress job.ProgressFunc) (job.Result, error) {
	start := time.Now()
	var p Payload
	if err := connectors.DecodePayload(j, &p); err != nil {
		return job.Result{}, err
	}
	doc, err := c.document(j, p)
	if err != nil {
		return job.Result{}, err
	}
	if p.Width <= 0 {
		p.Width = 1280
	}
	if p.Height <= 0 {
		p.Height = 720
	}
	if p.Width > 8192 || p.Height > 8192 {
		return job.Result{}, job.Permanent(fmt.Errorf("browser job %s asks for %d×%d; the limit is 8192×8192", j.ID, p.Width, p.Height))
	}
	select { // a bounded number of tabs
	case c.tabs <- struct{}{}:
		defer func() { <-c.tabs }()
	case <-ctx.Done():
		return job.Result{}, ctx.Err()
	}
	progress(job.Progress{Percent: 10, Message: "opening a tab"})
	ctx, cancel := context.WithTimeout(ctx, c.s.Timeout)
	defer cancel()
	proxy, err := netguard.StartProxy(c.s.Network)
	if err != nil {
		return job.Result{}, err
	}
	defer proxy.Close() // after the tab and its context are gone (defers run in reverse)
	refused := func() error {
		if re := proxy.Refused(); re != nil {
			return job.Permanent(fmt.Errorf("browser job %s asked for an address it may not reach: %w", j.ID, re))
		}
		return nil
	}
	alloc, cancelAlloc := remote.NewAllocator(ctx, c.s.DebugURL)
	defer cancelAlloc()
	// A browser context of the job's own, disposed when the tab closes, whose traffic all
	// goes through the proxy; "<-loopback>" stops Chromium sending localhost around it.
	tab, closeTab := chromedp.NewContext(alloc, chromedp.WithNewBrowserContext(func(p *target.CreateBrowserContextParams) {
		p.ProxyServer, p.ProxyBypassList = proxy.URL(), "<-loopback>"
	}))
	defer closeTab()
	if err := chromedp.Do(tab, chromedp.EmulateViewport(p.Width, p.Height), load(doc)); err != nil {
		if rerr := refused(); rerr != nil {
			return job.Result{}, rerr
		}
		if ctx.Err() != nil {
			return job.Result{}, ctx.Err()
		}
		if p.URL != "" && strings.Contains(err.Error(), "net::") {
			return job.Result{}, job.Permanent(fmt.Errorf("the browser cannot load %s: %v", p.URL, err))
		}
		return job.Result{}, fmt.Errorf("%w at %s (%v); the job is retried once the browser is back", ErrBrowserDown, c.s.DebugURL, err)
	}
	// Let scripts draw: a p5 sketch first makes its canvas (p5 2 sets up asynchronously), then
	// two animation frames pass.
	wait := `new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))`
	if p.Type == "p5" {
		wait = `new Promise(r => { const t0 = Date.now(); (function poll() {
			if (document.querySelector('canvas') || Date.now() - t0 > 5000) requestAnimationFrame(() => requestAnimationFrame(() => r(true)));
			else setTimeout(poll, 20); })(); })`
	}
	_, _ = chromedp.Run(tab, chromedp.Evaluate[bool](wait, chromedp.EvalAwaitPromise))
	progress(job.Progress{Percent: 60, Message: "capturing"})
	var out []byte
	ext := ".png"
	switch {
	case p.Type == "pdf":
		ext = ".pdf"
		out, err = chromedp.Run(tab, func(ctx context.Context, t *chromedp.Target) ([]byte, error) {
			bg := true
			res, err := cdp.Call(ctx, t, page.PrintToPDF, page.PrintToPDFParams{PrintBackground: &bg})
			return res.Data, err
		})
	case p.FullPage:
		out, err = chromedp.Run(tab, chromedp.FullScreenshot(100))
	default:
		out, err = chromedp.Run(tab, chromedp.CaptureScreenshot())
	}
	if rerr := refused(); rerr != nil {
		return job.Result{}, rerr
	}
	if err != nil {
		return job.Result{}, fmt.Errorf("%w: capture failed (%v)", ErrBrowserDown, err)
	}
	end := job.Mark(ctx, job.PhaseUpload)
	saved, err := c.s.Assets.Save(ctx, j.ID, j.Ctx, ext, out)
	end()
	if err != nil {
		return job.Result{}, err
	}
	ctype := "image"
	if ext == ".pdf" {
		ctype = "binary"
	}
	return job.Result{Success: true, ProcessingTimeMS: time.Since(start).Milliseconds(),
		Data:            map[string]any{"image_url": saved.URL, "mime_type": saved.MimeType, "content_type": ctype, "size_bytes": saved.Size},
		OutputFiles:     []job.OutputFile{{Filename: saved.Path, Path: saved.URL, Type: ctype, SizeBytes: saved.Size, MimeType: saved.MimeType}},
		ServiceMetadata: &job.ServiceMetadata{ServiceVersion: "chromium", ServiceType: "playwright"}}, nil
}

// load opens a URL, or writes an HTML document into a blank tab. A document goes through
// Page.setDocumentContent rather than a data: URL: Chromium takes tens of seconds to open a
// data: URL of a megabyte (a sketch with p5.js inlined).
func load(doc string) chromedp.Action[chromedp.Void] {
	if strings.HasPrefix(doc, "http://") || strings.HasPrefix(doc, "https://") {
		return chromedp.Navigate(doc)
	}
	return chromedp.Steps(chromedp.Navigate("about:blank"), func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		tree, err := cdp.Call(ctx, t, page.GetFrameTree, cdp.Empty{})
		if err != nil {
			return chromedp.Void{}, err
		}
		_, err = cdp.Call(ctx, t, page.SetDocumentContent, page.SetDocumentContentParams{FrameID: tree.FrameTree.Frame.ID, HTML: doc})
		return chromedp.Void{}, err
	})
}

// document turns the payload into the URL or the HTML document the tab shows.
func (c *Connector) document(j *job.Job, p Payload) (string, error) {
	page := func(head, body string) string {
		return "<!doctype html><html><head><meta charset=utf-8><style>html,body{margin:0;padding:0}</style>" + head + "</head><body>" + body + "</body></html>"
	}
	switch p.Type {
	case "screenshot", "pdf", "":
		if p.URL != "" {
			if !strings.HasPrefix(p.URL, "http://") && !strings.HasPrefix(p.URL, "https://") {
				return "", job.Permanent(fmt.Errorf("browser job %s: url %q is not http(s)", j.ID, p.URL))
			}
			return p.URL, nil
		}
		if p.HTML != "" {
			return p.HTML, nil
		}
		return "", job.Permanent(fmt.Errorf("browser job %s needs a url or an html document", j.ID))
	case "html":
		return page("<style>"+p.CSS+"</style>", p.HTML+"<script>"+p.JavaScript+"</script>"), nil
	case "js":
		code := p.Code
		if code == "" {
			code = p.JavaScript
		}
		return page("", "<script>"+code+"</script>"), nil
	case "p5":
		if c.s.P5JS == "" {
			return "", job.Permanent(fmt.Errorf("p5 jobs need p5.js on the machine: set PLAYWRIGHT_P5_JS to a local p5.min.js (npm pack p5)"))
		}
		lib, err := os.ReadFile(c.s.P5JS)
		if err != nil {
			return "", fmt.Errorf("read p5.js at %s: %w", c.s.P5JS, err)
		}
		return page("<script>"+string(lib)+"</script>", "<script>"+p.Code+"</script>"), nil
	default:
		return "", job.Permanent(fmt.Errorf("browser job %s has type %q; use screenshot, pdf, html, js or p5", j.ID, html.EscapeString(p.Type)))
	}
}
