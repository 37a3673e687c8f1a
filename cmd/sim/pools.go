package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/internal/redistest"
)

// The pools scenario runs one mixed trace, on simulated time (1 s steps), through the real claim
// and completion scripts against a real redis-server, twice: on a fleet split into pools with
// affinity, and on the same fleet uniform and FIFO (emp's behaviour), with the same caches.
//
// Caches, as on real machines: each machine has a model cache on disk (MACHINE_MODEL_CACHE_GB
// 200; least recently used models go first) holding SDXL-class checkpoints of 6.5 GB and video
// models of 30 GB, so about 25 of the trace's 45 models (405 GB). The disks start filled as a
// fleet that has run the same traffic before would have them (models drawn by popularity until
// full; the same disks for both fleets); -cold starts them empty. A GPU job whose model is on
// the disk is a model hit (no download); each slot's GPU holds the model it ran last (a VRAM
// hit: no load from disk). The routed machines advertise their disk's models (broker.Routing.Cached,
// as the model cache does) and leave a job whose model they lack to a machine that has it, for
// at most the affinity window (LeaveMisses).
const (
	slotsEach = 2
	diskGB    = 200.0 // each machine's model cache (MACHINE_MODEL_CACHE_GB; -cache-gb)
	sdGB      = 6.5   // an SDXL-class checkpoint
	videoGB   = 30.0  // a video model

	affinityK      = 8                // MACHINE_AFFINITY_K
	affinityWindow = 10 * time.Second // MACHINE_AFFINITY_WINDOW
	poolAging      = 30 * time.Second // MACHINE_POOL_AGING of the standard and heavy pools
	fastAging      = 10 * time.Second // MACHINE_POOL_AGING of the fast pool: it lends itself sooner
	poolReserve    = 1                // MACHINE_POOL_RESERVE of every routed machine
)

// modelGB is the size of a model of the trace.
func modelGB(m string) float64 {
	if strings.HasPrefix(m, "video-") {
		return videoGB
	}
	return sdGB
}

// diskCache is a machine's model cache: least recently used models go first when a new one
// needs room.
type diskCache struct {
	capGB, usedGB float64
	lru           []string // most recent last
}

// fill fills an empty cache as earlier traffic like the trace's would have: models drawn by
// their popularity until no model fits.
func (d *diskCache) fill(r *rand.Rand) {
	zipf := rand.NewZipf(r, 1.2, 1, 39)
	for range 1000 {
		m := fmt.Sprintf("sd-%d", zipf.Uint64())
		if r.IntN(20) == 0 {
			m = fmt.Sprintf("video-%d", r.IntN(5))
		}
		if slices.Contains(d.lru, m) {
			continue
		}
		if d.usedGB+sdGB > d.capGB {
			return
		}
		if d.usedGB+modelGB(m) <= d.capGB {
			d.lru, d.usedGB = append(d.lru, m), d.usedGB+modelGB(m)
		}
	}
}

// use records that a job ran this model; it says whether the model was already on disk.
func (d *diskCache) use(m string) bool {
	if k := slices.Index(d.lru, m); k >= 0 {
		d.lru = append(slices.Delete(d.lru, k, k+1), m)
		return true
	}
	for len(d.lru) > 0 && d.usedGB+modelGB(m) > d.capGB {
		d.usedGB -= modelGB(d.lru[0])
		d.lru = d.lru[1:]
	}
	d.lru, d.usedGB = append(d.lru, m), d.usedGB+modelGB(m)
	return false
}

var poolSizes = []struct {
	name     string
	machines int
}{{"fast", 6}, {"standard", 8}, {"heavy", 4}}

type simJob struct {
	id, service, model string
	created, dur       int // s
}

// trace: API jobs (no model, 0.5-3 s), standard GPU jobs (Zipf over 40 models, 20-90 s) and heavy
// ones (5 models, 6-10 min), arriving at a rate a little above the fleet's capacity for `for` s.
func trace(seed uint64, span int) []simJob {
	r := rand.New(rand.NewPCG(seed, 1))
	zipf := rand.NewZipf(rand.New(rand.NewPCG(seed, 2)), 1.2, 1, 39)
	var jobs []simJob
	add := func(j simJob) { j.id = fmt.Sprintf("j%05d", len(jobs)); jobs = append(jobs, j) }
	for t := 0; t < span; t++ {
		for k := 0; k < poissonish(r, 2.0); k++ {
			add(simJob{service: "api", created: t, dur: 1 + r.IntN(3)})
		}
		for k := 0; k < poissonish(r, 0.4); k++ {
			add(simJob{service: "gpu", model: fmt.Sprintf("sd-%d", zipf.Uint64()), created: t, dur: 20 + r.IntN(71)})
		}
		for k := 0; k < poissonish(r, 0.02); k++ {
			add(simJob{service: "gpu", model: fmt.Sprintf("video-%d", r.IntN(5)), created: t, dur: 360 + r.IntN(241)})
		}
	}
	return jobs
}

func poissonish(r *rand.Rand, mean float64) int {
	n, l, p := 0, math.Exp(-mean), r.Float64()
	for p > l {
		n++
		p *= r.Float64()
	}
	return n
}

type simMachine struct {
	b      *broker.Broker
	pool   string
	caps   [][]byte // per slot
	ids    []string // worker id per slot
	busy   []int    // per slot: the end of its job (s), -1 idle
	held   []*heldJob
	disk   diskCache
	loaded []string // per slot: the model in its GPU's memory
}

type heldJob struct {
	j        simJob
	job      *job.Job
	assigned int
}

type poolRun struct {
	FastP95Wait, MaxWait float64
	ModelHitRate         float64
	VRAMHitRate          float64
	Utilization          map[string]float64
	Starved              int
}

func poolsScenario(o opts) (map[string]any, string, error) {
	if o.diskGB <= 0 {
		o.diskGB = diskGB
	}
	span, warm := 1200, 300
	if o.quick {
		span, warm = 240, 60
	}
	srv, stop, err := redistest.StartTemp("sim-pools")
	if err != nil {
		return nil, "", err
	}
	defer stop()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	jobs := trace(7, span)
	routed, err := runPools(rdb, jobs, span, warm, true, o)
	if err != nil {
		return nil, "", err
	}
	base, err := runPools(rdb, jobs, span, warm, false, o)
	if err != nil {
		return nil, "", err
	}
	minUtil := 1.0
	for _, u := range routed.Utilization {
		minUtil = min(minUtil, u)
	}
	report := map[string]any{
		"fast_p95_wait_s": routed.FastP95Wait, "baseline_fast_p95_wait_s": base.FastP95Wait,
		"affinity_model_hit_rate": routed.ModelHitRate, "baseline_affinity_model_hit_rate": base.ModelHitRate,
		"pool_utilization_min": minUtil, "pool_utilization": routed.Utilization,
		"starved_jobs": routed.Starved, "baseline_starved_jobs": base.Starved,
		"max_wait_s": routed.MaxWait, "baseline_max_wait_s": base.MaxWait, "pool_trace_jobs": len(jobs),
		"affinity_vram_hit_rate": routed.VRAMHitRate, "baseline_affinity_vram_hit_rate": base.VRAMHitRate,
		"pool_model_cache_gb": o.diskGB, "pool_model_caches_cold": o.cold,
	}
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "fleet\tfast p95 wait s\tmodel hit rate\tVRAM hit rate\tmax wait s\tstarved\t\n")
	for _, r := range []struct {
		name string
		p    poolRun
	}{{"pools+affinity", routed}, {"uniform FIFO", base}} {
		fmt.Fprintf(tw, "%s\t%.1f\t%.3f\t%.3f\t%.0f\t%d\t\n", r.name, r.p.FastP95Wait, r.p.ModelHitRate, r.p.VRAMHitRate, r.p.MaxWait, r.p.Starved)
	}
	tw.Flush()
	fmt.Fprintf(&sb, "pool utilization (saturating phase, routed): %v; %d jobs over %d s\n", routed.Utilization, len(jobs), span)
	return report, sb.String(), nil
}

func runPools(rdb *redis.Client, jobs []simJob, span, warm int, routed bool, o opts) (poolRun, error) {
	ctx := context.Background()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		return poolRun{}, err
	}
	t0 := time.Now().Truncate(time.Second)
	now := 0
	clock := func() time.Time { return t0.Add(time.Duration(now) * time.Second) }
	var all []string
	for i := range 40 {
		all = append(all, fmt.Sprintf("sd-%d", i))
	}
	for i := range 5 {
		all = append(all, fmt.Sprintf("video-%d", i))
	}
	var machines []*simMachine
	for _, p := range poolSizes {
		for i := range p.machines {
			m := &simMachine{b: broker.New(rdb), pool: p.name, disk: diskCache{capGB: o.diskGB}}
			m.b.SetClock(clock)
			id := fmt.Sprintf("%s-%d", p.name, i)
			for s := range slotsEach {
				c := broker.Capabilities{WorkerID: fmt.Sprintf("%s-worker-%d", id, s), MachineID: id, Services: []string{"api", "gpu"},
					Models: map[string][]string{"gpu": all}, CustomerAccess: broker.CustomerAccess{Isolation: "loose"},
					Performance: broker.Performance{ConcurrentJobs: 1}}
				if routed {
					c.Pool = p.name
				}
				b, err := c.Encode()
				if err != nil {
					return poolRun{}, err
				}
				m.caps, m.ids, m.busy, m.held = append(m.caps, b), append(m.ids, c.WorkerID), append(m.busy, -1), append(m.held, nil)
				m.loaded = append(m.loaded, "")
			}
			if !o.cold {
				m.disk.fill(rand.New(rand.NewPCG(uint64(len(machines)), 4)))
			}
			machines = append(machines, m)
		}
	}
	routing := func(m *simMachine) broker.Routing {
		if !routed {
			return broker.Routing{}
		}
		lo, hi, _, _ := config.PoolDuration(m.pool, "")
		aging := poolAging
		if m.pool == "fast" {
			aging = fastAging
		}
		return broker.Routing{PoolMin: lo, PoolMax: hi, Aging: aging, AffinityK: affinityK, AffinityWindow: affinityWindow,
			Cached: map[string][]string{"gpu": slices.Clone(m.disk.lru)}, LeaveMisses: true, MayLend: func() bool {
				idle := 0
				for _, b := range m.busy {
					if b < 0 {
						idle++
					}
				}
				return idle > poolReserve
			}}
	}
	byID := map[string]simJob{}
	waits, claimed := map[string]int{}, 0
	var fastWaits []float64
	hits, vramHits, gpuJobs := 0, 0, 0
	busySec := map[string]float64{}
	next := 0
	horizon := span + 4*3600
	for now = 0; now < horizon && claimed < len(jobs); now++ {
		for _, m := range machines { // completions
			for s := range m.busy {
				if m.busy[s] >= 0 && m.busy[s] <= now {
					h := m.held[s]
					at := t0.Add(time.Duration(h.assigned) * time.Second)
					rdb.HSet(ctx, broker.JobKey(h.j.id), "assigned_at", fmt.Sprintf("%d.000000", at.Unix()))
					if err := m.b.Complete(ctx, h.job, m.ids[s], job.Result{Success: true}); err != nil {
						return poolRun{}, fmt.Errorf("complete %s: %w", h.j.id, err)
					}
					m.busy[s], m.held[s] = -1, nil
				}
			}
		}
		for ; next < len(jobs) && jobs[next].created <= now; next++ { // arrivals
			j := jobs[next]
			byID[j.id] = j
			req := ""
			if j.model != "" {
				req = `{"models":["` + j.model + `"]}`
			}
			created := t0.Add(time.Duration(j.created) * time.Second)
			rdb.HSet(ctx, broker.JobKey(j.id), map[string]any{"id": j.id, "service_required": j.service, "priority": "50",
				"payload": "{}", "requirements": req, "customer_id": "", "created_at": broker.ISO(created), "status": "pending",
				"retry_count": "0", "max_retries": "3", "workflow_id": ""})
			rdb.ZAdd(ctx, broker.KeyPending, redis.Z{Score: 50*1e15 - float64(created.Unix()), Member: j.id})
		}
		order := rand.New(rand.NewPCG(uint64(now), 3)).Perm(len(machines))
		for _, i := range order { // idle slots claim
			m := machines[i]
			for s := range m.busy {
				if m.busy[s] >= 0 {
					continue
				}
				m.b.SetRouting(routing(m))
				j, err := claimAll(ctx, m.b, m.caps[s])
				if err != nil {
					return poolRun{}, err
				}
				if j == nil {
					break
				}
				sj := byID[j.ID]
				claimed++
				waits[sj.id] = now - sj.created
				if sj.service == "api" {
					fastWaits = append(fastWaits, float64(now-sj.created))
				} else {
					gpuJobs++
					if m.disk.use(sj.model) {
						hits++
					}
					if m.loaded[s] == sj.model {
						vramHits++
					}
					m.loaded[s] = sj.model
				}
				m.busy[s], m.held[s] = now+sj.dur, &heldJob{j: sj, job: j, assigned: now}
			}
		}
		if now >= warm && now < span {
			for _, m := range machines {
				for s := range m.busy {
					if m.busy[s] >= 0 {
						busySec[m.pool]++
					}
				}
			}
		}
	}
	r := poolRun{Utilization: map[string]float64{}, Starved: len(jobs) - claimed}
	for _, p := range poolSizes {
		r.Utilization[p.name] = math.Round(busySec[p.name]/float64(p.machines*slotsEach*(span-warm))*1000) / 1000
	}
	slices.Sort(fastWaits)
	if len(fastWaits) > 0 {
		r.FastP95Wait = fastWaits[int(float64(len(fastWaits)-1)*0.95)]
	}
	for _, w := range waits {
		r.MaxWait = max(r.MaxWait, float64(w))
	}
	if gpuJobs > 0 {
		r.ModelHitRate = math.Round(float64(hits)/float64(gpuJobs)*1000) / 1000
		r.VRAMHitRate = math.Round(float64(vramHits)/float64(gpuJobs)*1000) / 1000
	}
	return r, nil
}

// claimAll claims until a job is found or the queue's end is reached.
func claimAll(ctx context.Context, b *broker.Broker, caps []byte) (*job.Job, error) {
	var cursor int64
	for range 100 {
		j, next, err := b.Claim(ctx, caps, 500, cursor)
		if err != nil || j != nil || next == 0 {
			return j, err
		}
		cursor = next
	}
	return nil, nil
}
