// Package demand is the demand scenario of the simulator: a job trace replayed, in virtual
// time, against a real redis-server and the machine's real core/demand, core/modelcache and
// core/autoscale code, once with them (prefetch, demand-weighted eviction, autoscaling with
// pre-warm and idle eviction) and once as the baseline (no prefetch, plain LRU, static
// connectors, the new service enabled by hand a while after its first job waits).
//
// Jobs are submitted with broker.Submit (exactly as the API writes them) and claimed with the
// claim script; the demand tracker follows the real job_submitted and job_claimed messages;
// models are real files downloaded from a local HTTP server into a real cache directory. Only
// time is simulated: run, model load and download times come from the trace and the
// configured bandwidth, and a download occupies the link for size/bandwidth virtual seconds.
package demand

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"time"

	"github.com/emp-job-queue/machine/internal/redistest"
)

// Options shape the scenario. Zero fields take the defaults of Defaults.
type Options struct {
	Seed          int64
	Duration      time.Duration // of the trace; demand shifts at half of it
	MeanArrival   time.Duration // between jobs (Poisson arrivals)
	RunTime       time.Duration // mean run time of a job (uniform within ±50 %)
	LoadTime      time.Duration // loading a model into VRAM, per job
	Checkpoints   int           // per service
	LoRAs         int           // per service
	ZipfS         float64       // Zipf exponent of model popularity (> 1)
	BudgetFrac    float64       // the cache's disk budget as a fraction of the whole model set
	Bandwidth     int64         // bytes per virtual second of the download link
	ServiceStart  time.Duration // installing and starting a service
	OperatorDelay time.Duration // baseline: how long after the new service's first job an operator enables it
	Tick          time.Duration // autoscaler and prefetch period
	Quick         bool          // a short trace, for tests
	NoPrefetch    bool          // ablation: the demand-aware run without prefetch
}

// Defaults returns the scenario's default options.
func Defaults() Options {
	return Options{Seed: 1, Duration: 4 * time.Hour, MeanArrival: 6 * time.Second, RunTime: 10 * time.Second,
		LoadTime: 2 * time.Second, Checkpoints: 10, LoRAs: 16, ZipfS: 1.3, BudgetFrac: 0.4, Bandwidth: 4000,
		ServiceStart: 60 * time.Second, OperatorDelay: 10 * time.Minute, Tick: 10 * time.Second}
}

func (o Options) withDefaults() Options {
	d := Defaults()
	if o.Quick {
		d.Duration = 40 * time.Minute
	}
	set := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&o.Duration, d.Duration)
	set(&o.MeanArrival, d.MeanArrival)
	set(&o.RunTime, d.RunTime)
	set(&o.LoadTime, d.LoadTime)
	set(&o.ServiceStart, d.ServiceStart)
	set(&o.OperatorDelay, d.OperatorDelay)
	set(&o.Tick, d.Tick)
	if o.Seed == 0 {
		o.Seed = d.Seed
	}
	if o.Checkpoints < 2 {
		o.Checkpoints = d.Checkpoints
	}
	if o.LoRAs < 2 {
		o.LoRAs = d.LoRAs
	}
	if o.ZipfS <= 1 {
		o.ZipfS = d.ZipfS
	}
	if o.BudgetFrac <= 0 || o.BudgetFrac >= 1 {
		o.BudgetFrac = d.BudgetFrac
	}
	if o.Bandwidth <= 0 {
		o.Bandwidth = d.Bandwidth
	}
	return o
}

// Report is what the scenario measured; the JSON keys are the simulator's contract.
type Report struct {
	Jobs                      int      `json:"jobs"`
	ModelSetBytes             int64    `json:"model_set_bytes"`
	CacheBudgetBytes          int64    `json:"cache_budget_bytes"`
	ModelCacheHitRate         float64  `json:"model_cache_hit_rate"`
	BaselineModelCacheHitRate float64  `json:"baseline_model_cache_hit_rate"`
	DemandShiftFirstClaimS    float64  `json:"demand_shift_first_claim_s"`
	BaselineDemandShiftClaimS float64  `json:"baseline_demand_shift_first_claim_s"`
	BytesDownloaded           int64    `json:"bytes_downloaded"`
	BaselineBytesDownloaded   int64    `json:"baseline_bytes_downloaded"`
	Flaps                     int      `json:"flaps"`
	Decisions                 int      `json:"autoscale_decisions"`
	MeanWaitS                 float64  `json:"mean_job_wait_s"`
	BaselineMeanWaitS         float64  `json:"baseline_mean_job_wait_s"`
	Evictions                 int64    `json:"evictions"`
	BaselineEvictions         int64    `json:"baseline_evictions"`
	DecisionLog               []string `json:"decision_log,omitempty"`
}

// Run replays the trace twice (demand-aware, then baseline) and reports both.
func Run(ctx context.Context, o Options) (Report, error) {
	o = o.withDefaults()
	tr := newTrace(o)
	dir, err := os.MkdirTemp("", "sim-demand-")
	if err != nil {
		return Report{}, err
	}
	defer os.RemoveAll(dir)
	srv, err := redistest.StartServer(dir)
	if err != nil {
		return Report{}, err
	}
	defer srv.Stop()
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m, ok := tr.models[r.URL.Path[1:]]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, m.name, time.Time{}, bytesReader(m.body))
	}))
	defer files.Close()

	budget := int64(float64(tr.total) * o.BudgetFrac)
	rep := Report{Jobs: len(tr.jobs), ModelSetBytes: tr.total, CacheBudgetBytes: budget}
	smart, err := replay(ctx, o, tr, srv, files.URL, dir+"/smart", budget, true)
	if err != nil {
		return rep, fmt.Errorf("demand-aware run: %w", err)
	}
	base, err := replay(ctx, o, tr, srv, files.URL, dir+"/baseline", budget, false)
	if err != nil {
		return rep, fmt.Errorf("baseline run: %w", err)
	}
	rep.ModelCacheHitRate, rep.BaselineModelCacheHitRate = smart.hitRate(), base.hitRate()
	rep.DemandShiftFirstClaimS, rep.BaselineDemandShiftClaimS = smart.firstShiftClaim.Seconds(), base.firstShiftClaim.Seconds()
	rep.BytesDownloaded, rep.BaselineBytesDownloaded = smart.bytes, base.bytes
	rep.Flaps, rep.Decisions = smart.flaps, len(smart.decisions)
	rep.MeanWaitS, rep.BaselineMeanWaitS = smart.meanWait(), base.meanWait()
	rep.Evictions, rep.BaselineEvictions = smart.evictions, base.evictions
	for _, d := range smart.decisions {
		rep.DecisionLog = append(rep.DecisionLog, fmt.Sprintf("t=%s %s", d.At.Sub(epoch), d))
	}
	return rep, nil
}
