// Package machine wires the core together and owns its lifecycle: broker connection, worker
// slots, status publishing, heartbeats and the HTTP server, from start to a graceful drain.
package machine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emp-job-queue/machine/core/accounting"
	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors"
	a1111conn "github.com/emp-job-queue/machine/core/connectors/a1111"
	comfyconn "github.com/emp-job-queue/machine/core/connectors/comfyui"
	geminiconn "github.com/emp-job-queue/machine/core/connectors/gemini"
	"github.com/emp-job-queue/machine/core/connectors/mock"
	ollamaconn "github.com/emp-job-queue/machine/core/connectors/ollama"
	openaiconn "github.com/emp-job-queue/machine/core/connectors/openai"
	"github.com/emp-job-queue/machine/core/connectors/playwright"
	"github.com/emp-job-queue/machine/core/connectors/replicate"
	"github.com/emp-job-queue/machine/core/connectors/runpod"
	"github.com/emp-job-queue/machine/core/connectors/simulation"
	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/core/embedded"
	"github.com/emp-job-queue/machine/core/httpapi"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/metrics"
	"github.com/emp-job-queue/machine/core/netguard"
	"github.com/emp-job-queue/machine/core/plan"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/core/status"
	"github.com/emp-job-queue/machine/core/supervisor"
	"github.com/emp-job-queue/machine/core/worker"
	"github.com/emp-job-queue/machine/gpu"
	"github.com/emp-job-queue/machine/installers"
	"github.com/emp-job-queue/machine/installers/browser"
	comfyinstall "github.com/emp-job-queue/machine/installers/comfyui"
	"github.com/emp-job-queue/machine/internal/safefs"
)

// factory builds a slot's connector; svc is the internal service the slot is bound to, if any.
type factory func(cfg *config.Config, slot plan.Slot, svc *plan.Service) connectors.Connector

// jobNetwork is what the traffic jobs cause may reach: public addresses, and the networks
// the operator allows, but never the machine's own HTTP port (the connectors add the
// browser's DevTools port).
func jobNetwork(c *config.Config) netguard.Policy {
	p := netguard.Policy{Allow: c.AllowPrivateNetworks}
	if c.HealthPort > 0 {
		p.LocalPorts = []uint16{uint16(c.HealthPort)}
	}
	return p
}

// storage is where connectors put their outputs: the local asset directory, or the
// S3-compatible storage a job's ctx.storage names. A bad S3 setting fails at start (New).
func storage(c *config.Config) assets.Saver {
	r, err := assets.NewRouter(assets.Store{Dir: c.Assets.Dir, BaseURL: c.Assets.BaseURL}, assets.S3Config{
		Endpoint: c.Assets.S3Endpoint, AccessKey: c.Assets.S3AccessKey, SecretKey: c.Assets.S3SecretKey,
		Region: c.Assets.S3Region, Secure: c.Assets.S3Secure, Bucket: c.Assets.S3Bucket})
	if err != nil {
		return failingSaver{err}
	}
	return r
}

// failingSaver reports a storage that could not be set up, on every save.
type failingSaver struct{ err error }

func (f failingSaver) Save(string, json.RawMessage, string, []byte) (assets.Saved, error) {
	return assets.Saved{}, job.Permanent(f.err)
}

// factories are the connectors this build can run.
var factories = map[string]factory{
	"simulation": func(c *config.Config, _ plan.Slot, _ *plan.Service) connectors.Connector {
		return simulation.New(c.Simulation)
	},
	"mock": func(*config.Config, plan.Slot, *plan.Service) connectors.Connector { return mock.New() },
	"comfyui": func(c *config.Config, _ plan.Slot, svc *plan.Service) connectors.Connector {
		return comfyconn.New(comfyconn.Settings{BaseURL: fmt.Sprintf("http://127.0.0.1:%d", svc.Port), Inactivity: c.ComfyUI.Inactivity,
			Assets: storage(c)})
	},
	"openai": func(c *config.Config, _ plan.Slot, _ *plan.Service) connectors.Connector {
		return openaiconn.New(openaiconn.Settings{BaseURL: c.OpenAI.BaseURL, APIKey: c.OpenAI.APIKey, TextModel: c.OpenAI.TextModel,
			ImageModel: c.OpenAI.ImageModel, RatePerSec: c.OpenAI.RatePerSec, Timeout: c.OpenAI.Timeout,
			Assets: storage(c)})
	},
	"replicate": func(c *config.Config, _ plan.Slot, _ *plan.Service) connectors.Connector {
		return replicate.New(replicate.Settings{BaseURL: c.Replicate.BaseURL, Token: c.Replicate.Key,
			Assets: storage(c), Downloads: jobNetwork(c)})
	},
	"runpod": func(c *config.Config, _ plan.Slot, _ *plan.Service) connectors.Connector {
		return runpod.New(runpod.Settings{BaseURL: c.RunPod.BaseURL, APIKey: c.RunPod.Key, EndpointID: c.RunPod.Endpoint})
	},
	"playwright": func(c *config.Config, _ plan.Slot, svc *plan.Service) connectors.Connector {
		return playwright.New(playwright.Settings{DebugURL: fmt.Sprintf("http://127.0.0.1:%d", svc.Port), MaxTabs: c.BrowserTabs,
			P5JS: c.P5JS, Assets: storage(c), Network: jobNetwork(c)})
	},
	"comfyui-remote": func(c *config.Config, _ plan.Slot, _ *plan.Service) connectors.Connector {
		return comfyconn.New(comfyconn.Settings{BaseURL: c.ComfyUI.RemoteURL, Token: c.ComfyUI.RemoteKey, Inactivity: c.ComfyUI.Inactivity,
			Assets: storage(c)})
	},
	"ollama": func(c *config.Config, _ plan.Slot, svc *plan.Service) connectors.Connector {
		return ollamaconn.New(ollamaconn.Settings{BaseURL: fmt.Sprintf("http://127.0.0.1:%d", svc.Port), DefaultModel: c.Ollama.DefaultModel,
			Timeout: c.Ollama.Timeout, Assets: storage(c)})
	},
	"gemini": func(c *config.Config, _ plan.Slot, _ *plan.Service) connectors.Connector {
		return geminiconn.New(geminiconn.Settings{URL: c.Gemini.URL, APIKey: c.Gemini.APIKey, Timeout: c.Gemini.Timeout,
			MaxRetries: c.Gemini.MaxRetries, RatePerSec: c.Gemini.RatePerSec, Assets: storage(c)})
	},
	"a1111": func(c *config.Config, _ plan.Slot, svc *plan.Service) connectors.Connector {
		return a1111conn.New(a1111conn.Settings{BaseURL: fmt.Sprintf("http://127.0.0.1:%d", svc.Port), Timeout: c.A1111.Timeout, Assets: storage(c)})
	},
}

// Runnable lists the connectors this build can run.
func Runnable() []string {
	var names []string
	for n := range factories {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// CheckRunnable reports every configured connector this build cannot run yet.
func CheckRunnable(cfg *config.Config) error {
	var problems config.Problems
	for _, c := range cfg.Connectors {
		if _, ok := factories[c.Name]; !ok {
			problems = append(problems, fmt.Sprintf(
				"connector %q is planned but not built into this version of machine; remove it from WORKER_CONNECTORS (runnable now: %v)",
				c.Name, Runnable()))
		}
	}
	if len(problems) > 0 {
		return problems
	}
	return nil
}

// Options are what New needs besides the configuration.
type Options struct {
	Log     *slog.Logger
	Version string
	// GPUs is the GPU source (OpenGPUs picks it); nil means a fake sized by the configuration.
	GPUs gpu.Source
}

// OpenGPUs opens the GPU source GPU_MODE asks for and lets what it found fill the GPU
// settings the environment left unset. note says why GPUs are simulated, when they are.
func OpenGPUs(cfg *config.Config) (gpu.Source, string, error) {
	src, note, err := gpu.Open(cfg.GPUMode, gpu.FakeSpec{Count: cfg.GPUCount, Model: cfg.GPUModel, MemoryGB: cfg.GPUMemoryGB})
	if err != nil {
		return nil, "", err
	}
	sum := gpu.Summarize(src)
	cfg.ApplyGPUs(sum.Count, sum.Model, sum.MemoryGB, src.Name() == "fake")
	return src, note, nil
}

// Machine is one machine's core.
type Machine struct {
	cfg     *config.Config // settings; the connectors in force are in cur
	log     *slog.Logger
	store   *state.Store
	metrics *metrics.Metrics
	version string
	gpus    gpu.Source

	mu          sync.Mutex
	stopJobs    context.CancelFunc // set while Run drains
	httpAddr    string
	conns       map[string]connectors.Connector // shared connectors, by name and service
	known       []string                        // connectors run since start, enabled or not
	browserPath string                          // Chromium, found at boot when a connector needs it
	browserHome string                          // its profile and HOME, removed at exit unless services are kept
	daemons     daemons                         // what the Ollama and A1111 installs found (daemons.go)

	cur      atomic.Pointer[layout] // the connectors and plan in force
	fleet    atomic.Pointer[fleet]  // the running slots, while Run runs
	paused   atomic.Bool            // drained by the operator (control API): slots claim nothing
	running  sync.Map               // job id → context.CancelCauseFunc, for cancel_job
	services atomic.Pointer[supervisor.Supervisor]
	sampler  atomic.Pointer[gpu.Sampler]
	accounts *accounting.Accountant // every job's resource record
}

// New prepares a machine for a validated configuration.
func New(cfg *config.Config, opts Options) (*Machine, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	gpus := opts.GPUs
	if gpus == nil {
		gpus = gpu.NewFake(cfg.GPUCount, cfg.GPUModel, cfg.GPUMemoryGB)
	}
	if err := CheckRunnable(cfg); err != nil {
		return nil, err
	}
	if f, bad := storage(cfg).(failingSaver); bad {
		return nil, f.err
	}
	p, err := plan.New(cfg)
	if err != nil {
		return nil, err
	}
	m := &Machine{
		cfg: cfg, log: log, version: opts.Version, gpus: gpus,
		store: state.New(cfg.MachineID, cfg.Pool, nil), metrics: metrics.New(),
	}
	m.metrics.ObserveState(m.store.Snapshot)
	m.cur.Store(&layout{cfg: cfg, plan: p})
	m.accounts = accounting.New(accounting.Params{Store: m.store, Metrics: m.metrics,
		GPUHourPrice: cfg.GPUHourPrice, KWhPrice: cfg.KWhPrice, ServicePID: m.servicePID})
	for _, c := range cfg.Connectors {
		m.known = append(m.known, c.Name)
	}
	m.store.SetGPUSource(gpus.Name())
	return m, nil
}

// ControlSocket is where consoles attach.
func (m *Machine) ControlSocket() string { return m.cfg.ControlSocket }

// Store is the machine's state, for readers.
func (m *Machine) Store() *state.Store { return m.store }

// Plan is what the machine runs now.
func (m *Machine) Plan() *plan.Plan { return m.layout().plan }

// HTTPAddr is the address the HTTP server listens on, once Run has started it.
func (m *Machine) HTTPAddr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.httpAddr
}

// StopNow cuts the drain short: in-flight jobs are cancelled and go back to the queue.
func (m *Machine) StopNow() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopJobs != nil {
		m.stopJobs()
	}
}

// Run serves until ctx ends, then drains: claiming stops at once, in-flight jobs get
// DrainTimeout to finish, and the rest go back to the queue without using a retry.
func (m *Machine) Run(ctx context.Context) error {
	// Pid files, sockets and logs live here: another local user able to write there could make
	// the machine signal or show what they choose.
	if err := safefs.Dir(m.cfg.RunDir, "MACHINE_RUN_DIR", 0o700); err != nil {
		return err
	}
	if err := safefs.Dir(m.cfg.LogDir, "MACHINE_LOG_DIR", 0o755); err != nil {
		return err
	}
	url := m.cfg.RedisURL
	if m.cfg.Embedded() {
		eb, err := embedded.Start()
		if err != nil {
			return err
		}
		defer eb.Close()
		if err := eb.Advertise(m.cfg.RunDir); err != nil {
			m.log.Warn("embedded broker URL not written; `machine submit` needs HUB_REDIS_URL", "err", err)
		}
		defer eb.Withdraw(m.cfg.RunDir)
		url = eb.URL
		m.log.Info("embedded broker started (no HUB_REDIS_URL set); submit jobs with `machine submit`", "url", url)
	}
	dialURL := url
	if len(m.cfg.RedisSentinels) > 0 { // what /status and the logs name
		url = "redis-sentinel://" + strings.Join(m.cfg.RedisSentinels, ",") + "/" + m.cfg.RedisMaster
	}
	m.store.SetBroker(config.RedactURL(url), m.cfg.Embedded())

	rdb, err := broker.Dial(broker.Endpoint{URL: dialURL, Sentinels: m.cfg.RedisSentinels, Master: m.cfg.RedisMaster,
		SentinelPassword: m.cfg.RedisSentinelPassword}, max(len(m.layout().plan.Slots)+16, 32))
	if err != nil {
		return err
	}
	defer rdb.Close()
	b := broker.New(rdb)
	b.SetPolicy(broker.Policy{Lease: m.cfg.Lease, AvoidLastWorker: m.cfg.RetryAvoid,
		RetryBackoff: m.cfg.RetryBackoff, RetryBackoffMax: m.cfg.RetryBackoffMax})
	b.SetIdentity(m.cfg.MachineID, m.version) // what attestations name

	if err := m.connect(ctx, b, url); err != nil {
		return err
	}
	// Services are installed, then started; slots bound to them claim only once they are ready.
	if err := m.install(ctx, m.layout().plan.Services); err != nil {
		return err
	}
	sup, err := m.supervisor()
	if err != nil {
		return err
	}
	var supDone sync.WaitGroup
	supCtx, stopServices := context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		stopServices()
		supDone.Wait()
		m.mu.Lock()
		home := m.browserHome
		m.mu.Unlock()
		if home != "" && !m.cfg.KeepServices { // jobs kept nothing there: each had a context of its own
			_ = os.RemoveAll(home)
		}
	}()
	supDone.Go(func() { sup.Run(supCtx) })
	m.services.Store(sup)

	ln, err := net.Listen("tcp", m.cfg.HTTPListenAddr())
	if err != nil {
		return fmt.Errorf("the HTTP server cannot listen on %s (%w); set MACHINE_HEALTH_PORT to a free port (0 for any) or MACHINE_HTTP_ADDR to an address of this host", m.cfg.HTTPListenAddr(), err)
	}
	m.mu.Lock()
	m.httpAddr = ln.Addr().String()
	m.mu.Unlock()
	healthHost := "localhost"
	if ip := net.ParseIP(m.cfg.HTTPAddr); ip != nil && !ip.IsUnspecified() {
		healthHost = ip.String()
	}
	healthURL := "http://" + net.JoinHostPort(healthHost, fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)) + "/health"
	pub := status.NewPublisher(m.Plan, m.store, b, m.cfg.StatusInterval, healthURL, m.version, m.log)
	srv := m.serveHTTP(ln, pub, sup)
	ctl, err := control.Listen(m.cfg.ControlSocket, m.Control(), m.log)
	if err != nil {
		_ = srv.Close()
		return err
	}

	// Background work that lives until the slots are done.
	bgCtx, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var bg sync.WaitGroup

	jobCtx, stopJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer stopJobs()
	// Final writes of jobs are held through a broker outage, until the shutdown deadline.
	writes, stopWrites := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWrites()
	m.mu.Lock()
	m.stopJobs = stopJobs
	m.mu.Unlock()
	sampler := m.newSampler(sup)
	m.sampler.Store(sampler)
	fl := &fleet{m: m, b: b, sampler: sampler, sup: sup, writes: writes, jobs: jobCtx, ctx: ctx,
		runs: map[string]*slotRun{}, waker: worker.NewWaker(), draining: map[string]bool{}}
	m.fleet.Store(fl)
	defer m.fleet.Store(nil)

	bg.Go(func() { b.Watch(bgCtx, m.log, fl.waker, m.cancelJob) })
	bg.Go(func() { m.recovery(bgCtx, b) })
	bg.Go(func() { m.liveness(bgCtx, b, fl.ids) })
	bg.Go(func() { pub.Run(bgCtx) })
	bg.Go(func() { ctl.Serve(bgCtx) })
	bg.Go(func() { sampler.Run(bgCtx) })

	if err := fl.start(ctx, m.layout().plan.Slots); err != nil {
		stopBG()
		bg.Wait()
		_ = srv.Close()
		return err
	}
	m.store.SetPhase(state.Ready)
	if err := pub.Publish(ctx, status.MachineReady); err != nil {
		m.log.Warn("machine_ready status not published", "err", err)
	}
	m.log.Info("machine ready", "machine_id", m.cfg.MachineID, "slots", len(fl.ids()), "http", m.HTTPAddr())

	<-ctx.Done()
	// Past the drain timeout and a grace for the releases, shutdown stops waiting on a broker
	// that does not answer.
	deadline := time.AfterFunc(m.cfg.DrainTimeout+3*time.Second, stopWrites)
	defer deadline.Stop()
	m.store.SetPhase(state.Draining)
	m.log.Info("draining: no new claims; waiting for in-flight jobs", "in_flight", len(m.Control().Snapshot().Jobs),
		"timeout", m.cfg.DrainTimeout.String())
	fl.change.Lock() // no connector change from now on
	fl.stop(fl.ids(), m.cfg.DrainTimeout)

	m.store.SetPhase(state.Shutdown)
	final, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := pub.Publish(final, status.Shutdown); err != nil {
		m.log.Warn("shutdown status not published", "err", err)
	}
	stopBG()
	bg.Wait()
	_ = srv.Shutdown(final)
	m.log.Info("machine stopped")
	return nil
}

// connect waits until the broker answers, logging a clear reason while it does not.
func (m *Machine) connect(ctx context.Context, b *broker.Broker, url string) error {
	delay := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := b.Ping(ctx)
		if err == nil {
			err = b.LoadScripts(ctx)
		}
		if err == nil {
			m.store.BrokerReachable(true, nil)
			m.metrics.BrokerUp.Set(1)
			if policy, perr := b.MaxmemoryPolicy(ctx); perr == nil && policy != "noeviction" {
				m.log.Error("REDIS EVICTS KEYS: maxmemory-policy is "+policy+", so job hashes and queues can vanish under memory pressure; set maxmemory-policy noeviction on the broker",
					"policy", policy)
			}
			return nil
		}
		m.store.BrokerReachable(false, err)
		if attempt == 1 || attempt%10 == 0 {
			m.log.Error("broker does not answer; check HUB_REDIS_URL and that Redis runs; retrying",
				"url", config.RedactURL(url), "err", err, "attempt", attempt)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped before the broker at %s answered: %w", config.RedactURL(url), err)
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// liveness pings the broker every 2 s (health, metrics), heartbeats every slot, counts the
// queue for the console every 10 s, and prunes the claim script's service cache every 5 minutes.
func (m *Machine) liveness(ctx context.Context, b *broker.Broker, ids func() []string) {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	lastBeat, lastPrune, lastDepth := time.Now(), time.Now(), time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := b.Ping(pctx)
		if err == nil && time.Since(lastBeat) >= m.cfg.HeartbeatInterval-time.Second {
			if err = b.Heartbeat(pctx, ids()); err == nil {
				lastBeat = time.Now()
			}
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		// The queue depth is a scan of the shared queue: every 10 s is enough for a header.
		if err == nil && time.Since(lastDepth) >= 10*time.Second {
			lastDepth = time.Now()
			if n, _, qerr := b.PendingFor(ctx, m.jobServices(), 10000); qerr == nil {
				m.store.SetQueueDepth(n)
			}
		}
		if err == nil && time.Since(lastPrune) >= 5*time.Minute {
			lastPrune = time.Now()
			if n, perr := b.PruneServiceCache(ctx); perr != nil {
				m.log.Warn("service cache not pruned; will try again", "err", perr)
			} else if n > 0 {
				m.log.Debug("service cache pruned", "entries", n)
			}
		}
		m.store.BrokerReachable(err == nil, err)
		if err == nil {
			m.metrics.BrokerUp.Set(1)
		} else {
			m.metrics.BrokerUp.Set(0)
		}
	}
}

// sampler reads GPUs and the host into the state store and the metrics. A fake source's load
// follows the jobs running on each GPU, so the simulated GPUs look like the work they do.
func (m *Machine) newSampler(sup *supervisor.Supervisor) *gpu.Sampler {
	if fake, ok := m.gpus.(*gpu.Fake); ok {
		fake.SetActivity(func() map[int]float64 { // one snapshot per sample, not one per GPU
			busy := map[int]float64{}
			for _, s := range m.store.Snapshot().Slots {
				if s.GPU != plan.NoGPU && s.JobID != "" {
					busy[s.GPU] = 1
				}
			}
			return busy
		})

	}
	return gpu.NewSampler(gpu.SamplerParams{
		Source: m.gpus, Interval: m.cfg.GPUSampleEvery, Host: gpu.NewHost(m.cfg.Workspace), Log: m.log,
		Services: sup.PIDs,
		OnSample: func(t gpu.Snapshot) {
			m.store.SetTelemetry(t)
			m.metrics.ObserveTelemetry(t)
			m.accounts.Observe(t)
		},
	})
}

// serviceSpec is how the supervisor runs a planned service.
func (m *Machine) serviceSpec(svc plan.Service) (supervisor.Spec, error) {
	if spec, ok, err := m.daemonSpec(svc); ok { // ollama, a1111 (daemons.go)
		return spec, err
	}
	switch svc.Kind {
	case "comfyui":
		return comfyinstall.ServiceSpec(m.comfyInstall(), svc, m.cfg.ComfyArgs), nil
	case "browser":
		cred, err := browser.Credential(m.cfg.BrowserUser)
		if err != nil {
			return supervisor.Spec{}, err
		}
		profile, err := browser.PrepareProfile(filepath.Join(m.cfg.RunDir, "browser-profile"), cred)
		if err != nil {
			return supervisor.Spec{}, err
		}
		m.logBrowserIsolation(cred)
		m.mu.Lock()
		m.browserHome = profile
		m.mu.Unlock()
		return supervisor.Spec{
			Name: svc.Name, Command: append([]string{m.browserPath}, browser.Flags(browser.Options{Port: svc.Port, ProfileDir: profile, Sandbox: m.cfg.BrowserSandbox})...),
			Env: []string{"HOME=" + profile}, Credential: cred,
			Port: svc.Port, GPU: plan.NoGPU, StopGrace: 5 * time.Second,
			Probe: supervisor.Probe{Kind: "http", Target: fmt.Sprintf("http://127.0.0.1:%d/json/version", svc.Port)},
		}, nil
	}
	return supervisor.Spec{}, fmt.Errorf("service %s (%s) has no supervisor spec in this build", svc.Name, svc.Kind)
}

// logBrowserIsolation says who the browser runs as and whether its sandbox is on.
func (m *Machine) logBrowserIsolation(cred *syscall.Credential) {
	who := "the machine's own user"
	if cred != nil {
		who = fmt.Sprintf("%s (uid %d)", m.cfg.BrowserUser, cred.Uid)
	}
	if !m.cfg.BrowserSandbox {
		m.log.Warn("the browser runs without Chromium's sandbox (BROWSER_SANDBOX=false): a page that exploits the renderer gets the browser user's rights", "user", who)
		return
	}
	m.log.Info("the browser runs sandboxed", "user", who)
}

// comfyInstall is the ComfyUI installation the configuration describes.
func (m *Machine) comfyInstall() comfyinstall.Install {
	return comfyinstall.Install{
		Dir: m.cfg.ComfyUI.Dir, RepoURL: m.cfg.ComfyUI.RepoURL, Branch: m.cfg.ComfyUI.Branch, Commit: m.cfg.ComfyUI.Commit,
		Download: &installers.Downloader{Cache: filepath.Join(m.cfg.CacheDir, "downloads"), AllowUnverified: m.cfg.AllowUnverifiedDownloads},
	}
}

// install runs the installers of services (idempotent: a second boot skips what is done)
// within SERVICE_INSTALL_TIMEOUT.
func (m *Machine) install(ctx context.Context, services []plan.Service) error {
	kinds := map[string]bool{}
	for _, s := range services {
		kinds[s.Kind] = true
	}
	if kinds["browser"] {
		b, err := browser.Find(ctx, m.cfg.BrowserInstall == "apt")
		if err != nil {
			return err
		}
		m.browserPath = b.Path
		if m.cfg.BrowserSandbox {
			cred, err := browser.Credential(m.cfg.BrowserUser)
			if err == nil {
				err = browser.CheckSandbox(ctx, b.Path, cred)
			}
			if err != nil {
				return err
			}
		}
		m.log.Info("browser found", "path", b.Path, "version", b.Version)
	}
	if err := m.installDaemons(ctx, services); err != nil { // ollama, a1111 (daemons.go)
		return err
	}
	if !kinds["comfyui"] {
		return nil
	}
	in := m.comfyInstall()
	if m.cfg.ComfyUI.Manifest != "" {
		manifest, err := comfyinstall.LoadManifest(m.cfg.ComfyUI.Manifest)
		if err != nil {
			return err
		}
		in.Manifest = manifest
	}
	m.log.Info("installing ComfyUI (steps already done are skipped)", "dir", in.Dir)
	runner := &installers.Runner{MarkerDir: filepath.Join(m.cfg.CacheDir, "markers"), Parallel: 4,
		Timeout: m.cfg.InstallTimeout, Strict: m.cfg.InstallStrict, Log: m.log}
	if err := runner.Run(ctx, in.Stages()...); err != nil {
		var partial *installers.StepError
		if errors.As(err, &partial) && !m.cfg.InstallStrict && ctx.Err() == nil && installedCore(in) {
			m.log.Error("some custom nodes or models did not install; ComfyUI starts without them", "err", err)
			return nil
		}
		return fmt.Errorf("ComfyUI install: %w", err)
	}
	return nil
}

// installedCore reports whether ComfyUI itself (checkout and venv) is in place.
func installedCore(in comfyinstall.Install) bool {
	_, err1 := os.Stat(filepath.Join(in.Dir, "main.py"))
	_, err2 := os.Stat(filepath.Join(in.Venv(), "bin", "python"))
	return err1 == nil && err2 == nil
}

// gate keeps a slot from claiming while the operator drained the machine, its GPU is out of
// service, its service is not ready, or its connector says it is unavailable (an open breaker).
func (m *Machine) gate(s *gpu.Sampler, sup *supervisor.Supervisor, slot plan.Slot, conn connectors.Connector) func() bool {
	avail, _ := conn.(connectors.Availability)
	return func() bool {
		return !m.paused.Load() && (slot.GPU == plan.NoGPU || s.Healthy(slot.GPU)) && (slot.Service == "" || sup.Ready(slot.Service)) &&
			(avail == nil || avail.Available())
	}
}

// connector returns the connector for a slot, shared by every slot of the same connector and
// service: a remote API's rate limit and breaker are per connector, a browser's tab limit is
// per browser, each ComfyUI instance has its own.
func (m *Machine) connector(slot plan.Slot, svc *plan.Service) connectors.Connector {
	key := slot.Connector
	if svc != nil {
		key += "@" + svc.Name
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conns == nil {
		m.conns = map[string]connectors.Connector{}
	}
	c, ok := m.conns[key]
	if !ok {
		c = factories[slot.Connector](m.cfg, slot, svc)
		m.conns[key] = c
	}
	return c
}

// supervisor builds the supervisor for the services the machine runs: those declared in
// MACHINE_SERVICES_FILE (the connectors' own services join them as their connectors land).
func (m *Machine) supervisor() (*supervisor.Supervisor, error) {
	var specs []supervisor.Spec
	for _, d := range m.cfg.Services {
		gpuIndex := plan.NoGPU
		if d.GPU != nil {
			gpuIndex = *d.GPU
		}
		spec := supervisor.Spec{
			Name: d.Name, Command: d.Command, Dir: d.Dir, Port: d.Port, GPU: gpuIndex,
			Probe:         supervisor.Probe{Kind: d.Probe.Kind, Target: d.Probe.Target, Cmd: d.Probe.Command},
			MemoryLimitMB: d.MemoryLimitMB, StopGrace: time.Duration(d.StopGraceS * float64(time.Second)),
		}
		if d.Port > 0 {
			spec.Env = append(spec.Env, fmt.Sprintf("PORT=%d", d.Port))
		}
		if gpuIndex != plan.NoGPU {
			spec.Env = append(spec.Env, fmt.Sprintf("CUDA_VISIBLE_DEVICES=%d", gpuIndex))
		}
		for _, k := range slices.Sorted(maps.Keys(d.Env)) { // sorted: the spec's hash must not change between runs
			spec.Env = append(spec.Env, k+"="+d.Env[k])
		}
		specs = append(specs, spec)
	}
	for _, svc := range m.layout().plan.Services {
		spec, err := m.serviceSpec(svc)
		if err != nil {
			return nil, err
		}
		specs = append(specs, spec)
	}
	return supervisor.New(supervisor.Params{
		Specs: specs, RunDir: m.cfg.RunDir, LogDir: m.cfg.LogDir, Log: m.log, KeepOnExit: m.cfg.KeepServices,
		OnChange: m.store.SetService,
		Busy: func(service string) bool {
			for _, sl := range m.layout().plan.Slots {
				if sl.Service == service {
					if live, ok := m.store.Snapshot().Slot(sl.ID); ok && live.JobID != "" {
						return true
					}
				}
			}
			return false
		},
	})
}

// servicePID is the pid of a running supervised service, 0 when there is none.
func (m *Machine) servicePID(name string) int {
	if sup := m.services.Load(); sup != nil {
		return sup.PIDs()[name]
	}
	return 0
}

// track registers a running job for cancellation.
func (m *Machine) track(jobID string, cancel context.CancelCauseFunc) func() {
	m.running.Store(jobID, cancel)
	return func() { m.running.Delete(jobID) }
}

// cancelJob aborts a job the API cancelled, if one of this machine's slots runs it.
func (m *Machine) cancelJob(jobID, reason string) {
	if c, ok := m.running.Load(jobID); ok {
		m.log.Info("cancelling job at the API's request", "job_id", jobID, "reason", reason)
		c.(context.CancelCauseFunc)(worker.ErrCancelled)
	}
}

// recovery renews the leases of this machine's running jobs and, on every machine (a lock in
// Redis keeps it to one at a time), returns jobs whose lease expired to the queue.
func (m *Machine) recovery(ctx context.Context, b *broker.Broker) {
	renewEvery := max(m.cfg.Lease/3, 200*time.Millisecond)
	renew := time.NewTicker(renewEvery)
	defer renew.Stop()
	reap := time.NewTicker(time.Second)
	defer reap.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-renew.C:
			var held []broker.Held
			for _, s := range m.store.Snapshot().Slots {
				if s.JobID != "" {
					held = append(held, broker.Held{JobID: s.JobID, WorkerID: s.ID})
				}
			}
			rctx, cancel := context.WithTimeout(ctx, renewEvery)
			if _, err := b.RenewLeases(rctx, held); err != nil && ctx.Err() == nil {
				m.log.Warn("leases not renewed; if this lasts past MACHINE_LEASE_SECONDS other machines re-run these jobs", "jobs", len(held), "err", err)
			}
			cancel()
		case <-reap.C:
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			requeued, failed, err := b.Reap(rctx)
			cancel()
			if requeued+failed > 0 {
				m.log.Warn("jobs of machines that stopped renewing their leases were recovered", "requeued", requeued, "failed", failed)
			}
			if err != nil && ctx.Err() == nil {
				m.log.Debug("reaper skipped a round", "err", err)
			}
		}
	}
}

// jobServices are the service_required values this machine's slots claim.
func (m *Machine) jobServices() []string {
	var out []string
	for _, s := range m.layout().plan.Slots {
		for _, svc := range s.JobServices {
			if !slices.Contains(out, svc) {
				out = append(out, svc)
			}
		}
	}
	return out
}

func (m *Machine) serveHTTP(ln net.Listener, pub *status.Publisher, sup *supervisor.Supervisor) *httpapi.Server {
	lim := httpapi.DefaultLimits
	lim.MaxConns = m.cfg.HTTPMaxConns
	srv := httpapi.NewServer(httpapi.New(httpapi.Params{
		Store: m.store, Metrics: m.metrics.Handler(), Refresh: pub.Refresh, Token: m.cfg.APIToken, Version: m.version,
		Services: sup, SetConnector: m.SetConnector,
	}), lim)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("HTTP server stopped", "err", err)
		}
	}()
	return srv
}

// capabilities builds the claim capabilities of slots.
func (m *Machine) capabilities(slots []plan.Slot) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, s := range slots {
		gpus := m.cfg.GPUCount
		if s.GPU != plan.NoGPU {
			gpus = 1
		}
		c := broker.Capabilities{
			WorkerID: s.ID, MachineID: m.cfg.MachineID, Services: s.JobServices,
			Hardware: broker.Hardware{
				GPUCount: gpus, GPUMemoryGB: m.cfg.GPUMemoryGB, GPUModel: m.cfg.GPUModel,
				RAMGB: m.cfg.RAMGB, CPUCores: m.cfg.CPUCores,
			},
			CustomerAccess: broker.CustomerAccess{
				Isolation: m.cfg.CustomerIsolation, AllowedCustomers: m.cfg.AllowedCustomers, DeniedCustomers: m.cfg.DeniedCustomers,
			},
			Performance: broker.Performance{ConcurrentJobs: 1},
			Pool:        m.cfg.Pool, WorkflowID: m.cfg.WorkflowID, Custom: m.cfg.CustomCapabilities,
		}
		for _, svc := range s.JobServices {
			models := m.cfg.Models[svc]
			if models == nil {
				models = m.cfg.Models["*"]
			}
			if models != nil {
				if c.Models == nil {
					c.Models = map[string][]string{}
				}
				c.Models[svc] = models
			}
		}
		b, err := c.Encode()
		if err != nil {
			return nil, err
		}
		out[s.ID] = b
	}
	return out, nil
}
