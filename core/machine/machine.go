// Package machine wires the core together and owns its lifecycle: broker connection, worker
// slots, status publishing, heartbeats and the HTTP server, from start to a graceful drain.
package machine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emp-job-queue/machine/core/accounting"
	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/connectors/registry"
	"github.com/emp-job-queue/machine/core/connectors/throttle"
	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/core/embedded"
	"github.com/emp-job-queue/machine/core/httpapi"
	"github.com/emp-job-queue/machine/core/metrics"
	"github.com/emp-job-queue/machine/core/netguard"
	"github.com/emp-job-queue/machine/core/plan"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/core/status"
	"github.com/emp-job-queue/machine/core/supervisor"
	"github.com/emp-job-queue/machine/core/worker"
	"github.com/emp-job-queue/machine/gpu"
	"github.com/emp-job-queue/machine/internal/safefs"
)

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
func storage(c *config.Config) (assets.Saver, error) {
	return assets.NewRouter(assets.Store{Dir: c.Assets.Dir, BaseURL: c.Assets.BaseURL}, assets.S3Config{
		Endpoint: c.Assets.S3Endpoint, AccessKey: c.Assets.S3AccessKey, SecretKey: c.Assets.S3SecretKey,
		Region: c.Assets.S3Region, Secure: c.Assets.S3Secure, Bucket: c.Assets.S3Bucket})
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
	assets  assets.Saver // where connectors store outputs

	mu        sync.Mutex
	stopJobs  context.CancelFunc // set while Run drains
	httpAddr  string
	conns     map[string]connectors.Connector // shared connectors, by name and service
	throttles map[string]*throttle.Recorder   // remote APIs' throttle records, by connector

	cur      atomic.Pointer[layout]     // the connectors and plan in force
	rec      atomic.Pointer[reconciler] // changes the layout, while Run runs
	paused   atomic.Bool                // drained by the operator (control API): slots claim nothing
	running  sync.Map                   // job id → context.CancelCauseFunc, for cancel_job
	services atomic.Pointer[supervisor.Supervisor]
	sampler  atomic.Pointer[gpu.Sampler]
	accounts *accounting.Accountant // every job's resource record
	models   *models                // the model cache; nil when MACHINE_MODEL_CACHE_GB is 0
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
	if err := registry.Check(cfg); err != nil {
		return nil, err
	}
	saver, err := storage(cfg)
	if err != nil {
		return nil, err
	}
	p, err := plan.New(cfg)
	if err != nil {
		return nil, err
	}
	m := &Machine{
		cfg: cfg, log: log, version: opts.Version, gpus: gpus, assets: saver,
		store: state.New(cfg.MachineID, cfg.Pool, nil), metrics: metrics.New(),
	}
	m.cur.Store(&layout{cfg: cfg, plan: p})
	if m.models, err = newModels(cfg, m.store, log); err != nil {
		return nil, err
	}
	m.accounts = accounting.New(accounting.Params{Store: m.store, Metrics: m.metrics,
		GPUHourPrice: cfg.GPUHourPrice, KWhPrice: cfg.KWhPrice, ServicePID: m.servicePID})
	m.metrics.ObserveState(m.store.Snapshot) // queue, slots and services, read at scrape time
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

// component is a background part of the machine with asynq's shape.
type component interface {
	start(wg *sync.WaitGroup)
	shutdown()
}

// task runs a function that lives until its context ends as a component.
type task struct {
	fn   func(ctx context.Context)
	loop loop
}

func newTask(fn func(ctx context.Context)) *task { return &task{fn: fn, loop: newLoop()} }
func (t *task) start(wg *sync.WaitGroup)         { t.loop.run(wg, t.fn) }
func (t *task) shutdown()                        { t.loop.stop() }

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
		RetryBackoff: m.cfg.RetryBackoff, RetryBackoffMax: m.cfg.RetryBackoffMax, MaxJobBytes: m.cfg.MaxJobBytes})
	b.SetIdentity(m.cfg.MachineID, m.version) // what attestations name
	b.SetRouting(broker.Routing{Pool: m.cfg.Pool, PoolMin: m.cfg.PoolMin, PoolMax: m.cfg.PoolMax, Aging: m.cfg.PoolAging,
		AffinityK: m.cfg.AffinityK, AffinityWindow: m.cfg.AffinityWindow, LeaveMisses: m.cfg.AffinityLeave, MayLend: m.mayLend,
		CachedNow: m.cachedModels()})
	if err := m.connect(ctx, b, url); err != nil {
		return err
	}

	// Services run until the slots are done; the reconciler adds the connectors' own.
	sup, err := m.newSupervisor()
	if err != nil {
		return err
	}
	var supDone sync.WaitGroup
	supCtx, stopServices := context.WithCancel(context.WithoutCancel(ctx))
	defer func() { stopServices(); supDone.Wait() }()
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
	defer srv.Close()
	ctl, err := control.Listen(m.cfg.ControlSocket, m.Control(), m.log)
	if err != nil {
		return err
	}

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
	fl := &fleet{m: m, b: b, sampler: sampler, sup: sup, writes: writes, jobs: jobCtx,
		runs: map[string]*slotRun{}, waker: worker.NewWaker()}
	rec := newReconciler(reconcilerParams{
		store: m.store, log: m.log, fleet: fl, drain: m.cfg.DrainTimeout,
		services: &services{cfg: m.cfg, log: m.log, sup: sup, store: m.store, specs: map[string]connectors.SpecFunc{}},
		publish:  func(l *layout) { m.cur.Store(l) },
	}, emptyLayout(m.cfg))

	// The background components, in the order they start; they stop in reverse.
	background := []component{
		newTask(func(ctx context.Context) { b.Watch(ctx, m.log, fl.waker, m.cancelJob) }),
		newRecovery(recoveryParams{broker: b, store: m.store, log: m.log, lease: m.cfg.Lease}),
		newLiveness(livenessParams{broker: b, store: m.store, metrics: m.metrics, log: m.log, slots: fl.ids, heartbeat: m.cfg.HeartbeatInterval}),
		newQueueDepth(queueDepthParams{broker: b, store: m.store, services: m.jobServices}),
		newTask(pub.Run),
		newTask(ctl.Serve),
		newTask(sampler.Run),
	}
	// One demand tracker serves the autoscaler and the model cache; it starts before them and
	// stops after them.
	autoscale, why := autoscaling(m.cfg)
	var watch *demandWatch
	if autoscale || m.models != nil {
		watch = newDemandWatch(rdb, m.store, m.log)
		background = append(background, watch)
	} else {
		m.store.SetDemand(state.Demand{Note: noDemandNote})
	}
	if m.models != nil {
		background = append(background, &modelsComponent{mc: m.models, tracker: watch.tracker, loop: newLoop(),
			services: func() []string { return cacheServices(m.layout().plan) }})
	}
	var wg sync.WaitGroup
	for _, c := range background {
		c.start(&wg)
	}
	stopBackground := func() {
		for _, c := range slices.Backward(background) {
			c.shutdown()
		}
		wg.Wait()
	}
	if err := rec.boot(ctx, m.layout()); err != nil {
		stopBackground()
		return err
	}
	m.rec.Store(rec)
	rec.start(&wg)
	// The autoscaler changes the layout through the reconciler, so it starts after the boot
	// layout is in force and stops before the reconciler.
	var scaler *autoscaler // nil when off: the layout stays as configured
	if autoscale {
		scaler = newAutoscaler(autoscalerParams{tracker: watch.tracker, store: m.store, metrics: m.metrics, log: m.log,
			rec: rec, layout: m.layout, policy: autoscalePolicy(m.cfg), every: autoscaleTick})
		scaler.start(&wg)
	} else {
		m.store.SetAutoscaler(false, why, time.Now(), 0, nil)
	}
	m.store.SetPhase(state.Ready)
	if err := pub.Publish(ctx, status.MachineReady); err != nil {
		m.log.Warn("machine_ready status not published", "err", err)
	}
	m.log.Info("machine ready", "machine_id", m.cfg.MachineID, "slots", len(fl.ids()), "http", m.HTTPAddr())

	<-ctx.Done()
	// Past the drain timeout and a grace for the releases, shutdown stops waiting on a broker
	// that does not answer.
	deadline := time.AfterFunc(m.cfg.DrainTimeout+finalWritesGrace, stopWrites)
	defer deadline.Stop()
	m.store.SetPhase(state.Draining)
	m.log.Info("draining: no new claims; waiting for in-flight jobs", "in_flight", len(m.Control().Snapshot().Jobs),
		"timeout", m.cfg.DrainTimeout.String())
	if scaler != nil {
		scaler.shutdown()
	}
	rec.shutdown() // no change from now on; the one in flight ends first
	fl.stop(fl.ids(), m.cfg.DrainTimeout)

	m.store.SetPhase(state.Shutdown)
	final, cancel := context.WithTimeout(context.Background(), finalWritesGrace)
	defer cancel()
	if err := pub.Publish(final, status.Shutdown); err != nil {
		m.log.Warn("shutdown status not published", "err", err)
	}
	stopBackground()
	_ = srv.Shutdown(final)
	m.log.Info("machine stopped")
	return nil
}

// connect waits until the broker answers, logging a clear reason while it does not.
func (m *Machine) connect(ctx context.Context, b *broker.Broker, url string) error {
	delay := connectFirstRetry
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
		delay = min(delay*2, connectMaxRetry)
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
			m.store.SetTelemetry(telemetry(t))
			m.metrics.ObserveTelemetry(t)
			m.accounts.Observe(t)
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

func (m *Machine) serveHTTP(ln net.Listener, pub *status.Publisher, sup *supervisor.Supervisor) *httpapi.Server {
	lim := httpapi.DefaultLimits
	lim.MaxConns = m.cfg.HTTPMaxConns
	srv := httpapi.NewServer(httpapi.New(httpapi.Params{
		Store: m.store, Metrics: m.metrics.Handler(), Refresh: pub.Refresh, Token: m.cfg.APIToken, Version: m.version,
		Services: sup, Do: m.Control().Do,
	}), lim)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("HTTP server stopped", "err", err)
		}
	}()
	return srv
}

// cachedModels tells the claim, per service, the models on disk or in VRAM; nil without a
// model cache (the claim then prefers the capabilities' models).
func (m *Machine) cachedModels() func() map[string][]string {
	if m.models == nil {
		return nil
	}
	return func() map[string][]string { return m.models.cached(cacheServices(m.layout().plan)) }
}

// mayLend says whether an idle slot may take an aged job of another pool: only while more than
// MACHINE_POOL_RESERVE slots are idle (the claiming slot among them).
func (m *Machine) mayLend() bool {
	if m.cfg.PoolReserve <= 0 {
		return true
	}
	idle := 0
	for _, s := range m.store.Snapshot().Slots {
		if s.Status == state.SlotIdle {
			idle++
		}
	}
	return idle > m.cfg.PoolReserve
}
