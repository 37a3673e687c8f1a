package machine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/demand"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/modelcache"
	"github.com/emp-job-queue/machine/core/plan"
	"github.com/emp-job-queue/machine/core/state"
)

// models is the machine's model cache (core/modelcache), on when MACHINE_MODEL_CACHE_GB > 0:
// one directory (MACHINE_MODEL_CACHE_DIR) that every GPU's ComfyUI reads through its
// extra_model_paths.yaml, within a disk budget, filled from the catalogue
// (MACHINE_MODEL_CATALOG). Before a job runs, the catalogue models it references are made
// ready (downloaded first when missing, the job's progress saying so) and held until it ends;
// a prefetch loop downloads the models pending jobs of this machine's services want
// (MACHINE_MODEL_PREFETCH at once, 0: none). The machine's demand tracker (demandWatch) ranks
// models for eviction and prefetch.
//
// What is on disk is advertised to the claim (broker.Routing.CachedNow), in machine:status and
// /status. What is in VRAM is an inference: ComfyUI keeps the models of its last prompt
// loaded until another prompt needs others, so the models of the last job completed on a GPU
// are taken to be the ones in that GPU's memory. Nothing asks ComfyUI; a restarted ComfyUI or
// one that unloaded under memory pressure makes the inference wrong until the next job.
type models struct {
	cache    *modelcache.Cache
	store    *state.Store
	log      *slog.Logger
	prefetch int // downloads at once; 0: no prefetch
	budget   int64
	pred     lazyPredictor

	mu   sync.Mutex
	vram map[int][]string // GPU → the models of the last job completed on it (an inference)
	last state.ModelCache // what publish stored last: an unchanged cache is not stored again
}

// lazyPredictor is the demand tracker once the cache's component has started; until then no
// model is wanted.
type lazyPredictor struct {
	t atomic.Pointer[demand.Tracker]
}

func (p *lazyPredictor) ModelScore(name string) float64 {
	if t := p.t.Load(); t != nil {
		return t.ModelScore(name)
	}
	return 0
}

// newModels opens the model cache cfg asks for; nil when MACHINE_MODEL_CACHE_GB is 0.
func newModels(cfg *config.Config, store *state.Store, log *slog.Logger) (*models, error) {
	d := cfg.Demand
	if d.ModelCacheGB <= 0 {
		return nil, nil
	}
	catalog, err := catalogOf(cfg)
	if err != nil {
		return nil, err
	}
	mc := &models{store: store, log: log, prefetch: d.ModelPrefetch, budget: int64(d.ModelCacheGB * (1 << 30)), vram: map[int][]string{}}
	mc.cache, err = modelcache.New(modelcache.Params{
		Dir: d.ModelCacheDir, Budget: mc.budget, Catalog: catalog, Pinned: d.PinnedModels,
		Demand: &mc.pred, MaxDownloads: max(d.ModelPrefetch, 1), Log: log,
	})
	if err != nil {
		return nil, err
	}
	mc.publish()
	return mc, nil
}

// CheckModelCache reports what is wrong with the model cache settings that config cannot see:
// the catalogue (MACHINE_MODEL_CATALOG) and the pinned models it must list. `machine config
// validate` and `machine plan` call it; New does the same checks.
func CheckModelCache(cfg *config.Config) error {
	if cfg.Demand.ModelCacheGB <= 0 || cfg.Demand.ModelCatalog == "" {
		return nil // no cache, or config already reported the missing catalogue
	}
	_, err := catalogOf(cfg)
	return err
}

// catalogOf reads the catalogue and checks that it lists every pinned model.
func catalogOf(cfg *config.Config) (modelcache.Catalog, error) {
	d := cfg.Demand
	catalog, err := modelcache.LoadCatalog(d.ModelCatalog)
	if err != nil {
		return nil, err
	}
	for _, name := range d.PinnedModels {
		if _, ok := catalog[name]; !ok {
			return nil, fmt.Errorf("MACHINE_MODEL_PINNED has %s, which is not in the model catalogue %s; add it to the catalogue or drop it from the list", name, d.ModelCatalog)
		}
	}
	return catalog, nil
}

// modelsComponent runs the model cache's background work: the prefetch loop, from the
// machine's demand tracker, and the state it publishes.
type modelsComponent struct {
	mc       *models
	tracker  *demand.Tracker // run by the machine's demandWatch
	services func() []string // the job services of the slots that use the cache
	loop     loop
}

func (c *modelsComponent) start(wg *sync.WaitGroup) {
	c.loop.run(wg, func(ctx context.Context) {
		c.mc.pred.t.Store(c.tracker)
		var bg sync.WaitGroup
		defer bg.Wait()
		bg.Go(func() { every(ctx, modelCacheStatusEvery, func(context.Context) { c.mc.publish() }) })
		if c.mc.prefetch <= 0 {
			<-ctx.Done()
			return
		}
		every(ctx, modelPrefetchTick, func(ctx context.Context) { c.mc.prefetchOnce(ctx, c.tracker, c.services()) })
	})
}

func (c *modelsComponent) shutdown() { c.loop.stop() }

// prefetchOnce downloads the models pending jobs of services want, most wanted first, at most
// MACHINE_MODEL_PREFETCH at once; it returns when they are done.
func (mc *models) prefetchOnce(ctx context.Context, t *demand.Tracker, services []string) {
	if len(services) == 0 {
		return
	}
	want := t.Wanted(services, modelPrefetchBatch)
	if len(want) == 0 {
		return
	}
	fetched, err := mc.cache.Prefetch(ctx, want)
	if len(fetched) > 0 {
		mc.log.Info("model cache: prefetched models pending jobs need", "models", fetched)
	}
	if err != nil && ctx.Err() == nil {
		mc.log.Warn("model cache: a prefetch failed; jobs that need the model download it themselves", "err", err)
	}
	mc.publish()
}

// publish writes the cache's figures into the state store (/status, the console, metrics).
func (mc *models) publish() {
	st := mc.cache.Stats()
	mc.mu.Lock()
	vram := map[int][]string{}
	for g, names := range mc.vram {
		vram[g] = slices.Clone(names)
	}
	now := state.ModelCache{
		On: true, UsedBytes: st.Used, BudgetBytes: st.Budget, Hits: st.Hits, Misses: st.Misses,
		Downloads: st.Downloads, BytesDownloaded: st.BytesDownloaded, Evictions: st.Evictions,
		OnDisk: mc.cache.OnDisk(), Sizes: mc.cache.SizesOnDisk(), Downloading: mc.cache.Downloading(), InVRAM: vram,
	}
	same := reflect.DeepEqual(now, mc.last)
	mc.last = now
	mc.mu.Unlock()
	if !same {
		mc.store.SetModelCache(now)
	}
}

// cached is, per service, the models on disk or in VRAM: what the claim prefers. It is never
// nil while the cache is on, so the claim does not fall back to the capabilities' models.
func (mc *models) cached(services []string) map[string][]string {
	have := mc.cache.OnDisk()
	mc.mu.Lock()
	for _, names := range mc.vram {
		have = union(have, names)
	}
	mc.mu.Unlock()
	slices.Sort(have)
	if len(have) > advertiseMaxModels {
		have = have[:advertiseMaxModels]
	}
	out := make(map[string][]string, len(services))
	for _, s := range services {
		out[s] = have
	}
	return out
}

// loaded records the models of a job completed on a GPU: the ones taken to be in its VRAM.
func (mc *models) loaded(gpu int, names []string) {
	if gpu == plan.NoGPU || len(names) == 0 {
		return
	}
	mc.mu.Lock()
	mc.vram[gpu] = slices.Clone(names)
	mc.mu.Unlock()
	mc.publish()
}

// prepare makes the catalogue models a job references (names) ready on disk, downloading the missing
// ones first (its progress says so), and returns the function that releases them when the job
// ends. Names the catalogue does not have are left alone: the service may have them installed.
// A checksum mismatch fails the job for good (every machine would fetch the same wrong file);
// a full cache or a failed transfer is retryable (another machine, or this one later, may
// have room or a working network).
func (mc *models) prepare(ctx context.Context, j *job.Job, names []string, progress job.ProgressFunc) (func(), error) {
	var releases []func()
	releaseAll := func() {
		for _, r := range releases {
			r()
		}
	}
	for _, name := range names {
		if !mc.cache.Known(name) {
			continue
		}
		var report func(done, total int64)
		if !mc.cache.Has(name) {
			progress(job.Progress{Percent: 1, Message: "downloading model " + name, StepName: "downloading_model", Milestone: true})
			mc.publish()
			step := int64(0)
			report = func(done, total int64) {
				if total <= 0 || done < step {
					return
				}
				step = done + total/100 // at most a hundred reports a model
				progress(job.Progress{Percent: 1, StepName: "downloading_model",
					Message: fmt.Sprintf("downloading model %s: %.2f of %.2f GB", name, float64(done)/(1<<30), float64(total)/(1<<30))})
			}
		}
		_, release, err := mc.cache.Ensure(ctx, name, report)
		if err != nil {
			releaseAll()
			mc.publish()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, modelcache.ErrChecksum) {
				return nil, job.Permanent(fmt.Errorf("job %s: %w", j.ID, err))
			}
			return nil, fmt.Errorf("job %s: %w", j.ID, err)
		}
		releases = append(releases, release)
		if report != nil {
			progress(job.Progress{Percent: 1, Message: "model " + name + " downloaded", StepName: "downloading_model", Milestone: true})
			mc.publish()
		}
	}
	return releaseAll, nil
}

// wrap makes a slot's connector prepare its jobs' models first (nil cache: conn itself).
func (mc *models) wrap(conn connectors.Connector, slot plan.Slot) connectors.Connector {
	if mc == nil {
		return conn
	}
	return modelConn{Connector: conn, mc: mc, gpu: slot.GPU}
}

// modelConn is a slot's connector behind the model cache.
type modelConn struct {
	connectors.Connector
	mc  *models
	gpu int
}

func (c modelConn) Run(ctx context.Context, j *job.Job, progress job.ProgressFunc) (job.Result, error) {
	names := demand.Models(j.Payload, []byte(j.Fields["requirements"])) // bounded: see demand.MaxPayloadBytes
	release, err := c.mc.prepare(ctx, j, names, progress)
	if err != nil {
		return job.Result{}, err
	}
	defer release()
	res, err := c.Connector.Run(ctx, j, progress)
	if err == nil && res.Success {
		c.mc.loaded(c.gpu, names)
	}
	return res, err
}

// cacheServices are the job services of the slots whose models the cache serves: those bound
// to a GPU.
func cacheServices(p *plan.Plan) []string {
	var out []string
	for _, s := range p.Slots {
		if s.GPU == plan.NoGPU {
			continue
		}
		for _, svc := range s.JobServices {
			if !slices.Contains(out, svc) {
				out = append(out, svc)
			}
		}
	}
	return out
}
