// Package machine wires the core together and owns its lifecycle: broker connection, worker
// slots, status publishing, heartbeats and the HTTP server, from start to a graceful drain.
package machine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/connectors/registry"
	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/core/embedded"
	"github.com/emp-job-queue/machine/core/httpapi"
	"github.com/emp-job-queue/machine/core/metrics"
	"github.com/emp-job-queue/machine/core/plan"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/core/status"
	"github.com/emp-job-queue/machine/core/supervisor"
	"github.com/emp-job-queue/machine/core/worker"
	"github.com/emp-job-queue/machine/gpu"
)

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

	mu       sync.Mutex
	stopJobs context.CancelFunc // set while Run drains
	httpAddr string
	conns    map[string]connectors.Connector // shared connectors, by name and service
	known    []string                        // connectors run since start, enabled or not
	assets   assets.Saver                    // where connectors store outputs
	specs    map[string]connectors.SpecFunc  // installed service kinds: how to run an instance

	cur      atomic.Pointer[layout] // the connectors and plan in force
	fleet    atomic.Pointer[fleet]  // the running slots, while Run runs
	paused   atomic.Bool            // drained by the operator (control API): slots claim nothing
	running  sync.Map               // job id → context.CancelCauseFunc, for cancel_job
	services atomic.Pointer[supervisor.Supervisor]
	sampler  atomic.Pointer[gpu.Sampler]
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
		cfg: cfg, log: log, version: opts.Version, gpus: gpus, assets: saver, specs: map[string]connectors.SpecFunc{},
		store: state.New(cfg.MachineID, cfg.Pool, nil), metrics: metrics.New(),
	}
	m.cur.Store(&layout{cfg: cfg, plan: p})
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
	m.store.SetBroker(config.RedactURL(url), m.cfg.Embedded())

	opts, err := redis.ParseURL(url)
	if err != nil {
		return fmt.Errorf("HUB_REDIS_URL is not a Redis URL: %w", err)
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = 5*time.Second, 5*time.Second, 5*time.Second
	opts.PoolSize = max(len(m.layout().plan.Slots)+16, 32)
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	b := broker.New(rdb)
	b.SetPolicy(broker.Policy{Lease: m.cfg.Lease, AvoidLastWorker: m.cfg.RetryAvoid,
		RetryBackoff: m.cfg.RetryBackoff, RetryBackoffMax: m.cfg.RetryBackoffMax})

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
	defer func() { stopServices(); supDone.Wait() }()
	supDone.Go(func() { sup.Run(supCtx) })
	m.services.Store(sup)

	ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(m.cfg.HealthPort)))
	if err != nil {
		return fmt.Errorf("MACHINE_HEALTH_PORT %d is not available (%w); set MACHINE_HEALTH_PORT to a free port, or 0 for any", m.cfg.HealthPort, err)
	}
	m.mu.Lock()
	m.httpAddr = ln.Addr().String()
	m.mu.Unlock()
	healthURL := fmt.Sprintf("http://localhost:%d/health", ln.Addr().(*net.TCPAddr).Port)
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
		runs: map[string]*slotRun{}, wake: map[string]chan struct{}{}, draining: map[string]bool{}}
	m.fleet.Store(fl)
	defer m.fleet.Store(nil)

	bg.Go(func() { b.Watch(bgCtx, m.log, fl.dispatch, m.cancelJob) })
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
		},
	})
}

// serviceSpec is how the supervisor runs a planned service whose kind is installed.
func (m *Machine) serviceSpec(svc plan.Service) (supervisor.Spec, error) {
	m.mu.Lock()
	spec := m.specs[svc.Kind]
	m.mu.Unlock()
	if spec == nil {
		return supervisor.Spec{}, fmt.Errorf("service %s (%s) is not installed", svc.Name, svc.Kind)
	}
	return spec(svc.Instance()), nil
}

// install runs the installers of the services' kinds not installed yet (idempotent: a second
// boot skips what is done).
func (m *Machine) install(ctx context.Context, services []plan.Service) error {
	for _, svc := range services {
		m.mu.Lock()
		done := m.specs[svc.Kind] != nil
		m.mu.Unlock()
		if done {
			continue
		}
		kind, ok := registry.ServiceKind(svc.Kind)
		if !ok {
			return fmt.Errorf("service %s: no connector of this build installs a %s service", svc.Name, svc.Kind)
		}
		spec, err := kind.Install(ctx, connectors.InstallEnv{Config: m.cfg, Log: m.log})
		if err != nil {
			return err
		}
		m.mu.Lock()
		m.specs[svc.Kind] = spec
		m.mu.Unlock()
	}
	return nil
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
		d, _ := registry.Lookup(slot.Connector) // the plan knows only registered connectors
		env := connectors.Env{Config: m.cfg, Assets: m.assets}
		if svc != nil {
			env.ServiceURL = fmt.Sprintf("http://127.0.0.1:%d", svc.Port)
		}
		c = d.New(env)
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

// dispatcher wakes one idle slot of each connector that serves the submitted job's service.
func (m *Machine) dispatcher(wake map[string]chan struct{}) broker.WakeFunc {
	byService := map[string][]chan struct{}{}
	for _, s := range m.layout().plan.Slots {
		for _, svc := range s.JobServices {
			if !slices.Contains(byService[svc], wake[s.Connector]) {
				byService[svc] = append(byService[svc], wake[s.Connector])
			}
		}
	}
	return func(service string) {
		if service == "" {
			for _, ch := range wake {
				for range cap(ch) {
					select {
					case ch <- struct{}{}:
					default:
					}
				}
			}
			return
		}
		for _, ch := range byService[service] {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

func (m *Machine) serveHTTP(ln net.Listener, pub *status.Publisher, sup *supervisor.Supervisor) *http.Server {
	srv := &http.Server{
		Handler: httpapi.New(httpapi.Params{
			Store: m.store, Metrics: m.metrics.Handler(), Refresh: pub.Refresh, Token: m.cfg.APIToken, Version: m.version,
			Services: sup, SetConnector: m.SetConnector,
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
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
