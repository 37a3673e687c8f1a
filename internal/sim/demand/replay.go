package demand

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/autoscale"
	"github.com/emp-job-queue/machine/core/broker"
	coredemand "github.com/emp-job-queue/machine/core/demand"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/modelcache"
	"github.com/emp-job-queue/machine/internal/redistest"
)

func bytesReader(b []byte) io.ReadSeeker { return bytes.NewReader(b) }

// epoch is virtual time zero.
var epoch = time.Unix(1_800_000_000, 0)

// The simulated machine: two GPUs' worth of memory, each slot of a GPU service taking a share.
const (
	gpuMemoryGB  = 160.0
	slotMemoryGB = 30.0
)

type slot struct {
	busyUntil time.Time
	j         *job.Job
	release   []func()
	worker    string
}

type connector struct {
	name     string // also its job service
	enabled  bool
	readyAt  time.Time // its service is started
	want     int       // slots it should have
	slots    []*slot
	lastJob  time.Time
	workerNo int
}

type result struct {
	hits, requests  int
	bytes           int64
	evictions       int64
	firstShiftClaim time.Duration
	decisions       []autoscale.Decision
	flaps           int
	waits           []time.Duration
}

func (r result) hitRate() float64 {
	if r.requests == 0 {
		return 0
	}
	return float64(r.hits) / float64(r.requests)
}

func (r result) meanWait() float64 {
	if len(r.waits) == 0 {
		return 0
	}
	var s time.Duration
	for _, w := range r.waits {
		s += w
	}
	return s.Seconds() / float64(len(r.waits))
}

// run is one replay's state.
type run struct {
	o        Options
	tr       trace
	rdb      *redis.Client
	b        *broker.Broker
	tracker  *coredemand.Tracker
	cache    *modelcache.Cache
	smart    bool
	now      time.Time
	conns    map[string]*connector
	pending  map[string]int // jobs submitted and not yet claimed, by service (skips empty claims)
	ready    map[string]time.Time
	linkFree time.Time // the download link is busy until then
	expected uint64    // messages the tracker should have seen
	byID     map[string]arrival
	res      result
}

func replay(ctx context.Context, o Options, tr trace, srv *redistest.Server, url, dir string, budget int64, smart bool) (result, error) {
	rdb := srv.Client()
	defer rdb.Close()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		return result{}, err
	}
	r := &run{o: o, tr: tr, rdb: rdb, b: broker.New(rdb), smart: smart, now: epoch,
		pending: map[string]int{}, byID: map[string]arrival{}, ready: map[string]time.Time{}, linkFree: epoch,
		conns: map[string]*connector{
			serviceA: {name: serviceA, enabled: true, want: 2},
			serviceB: {name: serviceB},
		}}
	if err := r.b.LoadScripts(ctx); err != nil {
		return result{}, err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	clock := func() time.Time { return r.now }
	r.tracker = coredemand.New(coredemand.Params{Client: rdb, Now: clock, ReconcileEvery: time.Hour, Log: quiet})
	var models []modelcache.Model
	for _, m := range tr.models {
		models = append(models, modelcache.Model{Name: m.name, URL: url + "/" + m.name, Size: int64(len(m.body)), SHA256: m.sum, Kind: m.kind})
	}
	cat, err := modelcache.NewCatalog(models)
	if err != nil {
		return result{}, err
	}
	p := modelcache.Params{Dir: dir, Budget: budget, Catalog: cat, Now: clock, Log: quiet, HalfLife: 5 * time.Minute, MaxDownloads: 2}
	if smart {
		p.Demand = r.tracker
	} else {
		p.Policy = modelcache.LRU
	}
	if r.cache, err = modelcache.New(p); err != nil {
		return result{}, err
	}

	tctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- r.tracker.Run(tctx) }()
	defer func() { stop(); <-done }()
	for { // the tracker must hear the first job
		n, err := rdb.PubSubNumSub(ctx, broker.ChanSubmitted).Result()
		if err != nil {
			return result{}, err
		}
		if n[broker.ChanSubmitted] > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := r.loop(ctx); err != nil {
		return result{}, err
	}
	st := r.cache.Stats()
	r.res.bytes, r.res.evictions = st.BytesDownloaded, st.Evictions
	r.res.flaps = autoscale.Flaps(r.res.decisions, r.policy().Cooldown)
	return r.res, nil
}

func (r *run) policy() autoscale.Policy {
	return autoscale.Policy{
		Bounds:  map[string]autoscale.Bounds{serviceA: {Min: 1, Max: 3}, serviceB: {Min: 1, Max: 3}},
		Allowed: []string{serviceA, serviceB},
		IdleTTL: 10 * time.Minute, Cooldown: 2 * time.Minute, ShrinkAfter: time.Minute, ShrinkBelow: 0.5,
		Headroom: autoscale.Limits{MinFreeGPUMemGB: slotMemoryGB},
	}
}

// loop advances virtual time one second at a time until every job has run.
func (r *run) loop(ctx context.Context) error {
	var hist autoscale.History
	next, shiftAt := 0, time.Duration(-1)
	for i := 0; ; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		r.now = epoch.Add(time.Duration(i) * time.Second)
		if err := r.finish(ctx); err != nil {
			return err
		}
		submitted := false
		for next < len(r.tr.jobs) && epoch.Add(r.tr.jobs[next].at).Compare(r.now) <= 0 {
			a := r.tr.jobs[next]
			// The queue's order is that of virtual time: workflow_datetime stands in for the
			// wall clock the API would take, and ids are the trace's order.
			at := epoch.Add(a.at).UnixMilli()
			id, err := r.b.Submit(ctx, broker.JobSpec{ID: fmt.Sprintf("sim-%06d", next), Service: a.service,
				Payload: json.RawMessage(a.payload()), WorkflowDatetime: &at})
			if err != nil {
				return err
			}
			r.byID[id] = a
			if a.service == serviceB && shiftAt < 0 {
				shiftAt = r.now.Sub(epoch)
			}
			r.pending[a.service]++
			r.expected++
			next++
			submitted = true
		}
		r.catchUp(ctx)
		tick := i%int(r.o.Tick/time.Second) == 0
		if r.smart {
			if tick {
				if err := r.tracker.Reconcile(ctx); err != nil {
					return err
				}
				var ds []autoscale.Decision
				ds, hist = autoscale.Decide(r.policy(), r.now, r.states(), r.headroom(), hist)
				r.apply(ds)
			}
			if (submitted || tick) && !r.o.NoPrefetch {
				if err := r.prefetch(ctx); err != nil {
					return err
				}
			}
		} else if b := r.conns[serviceB]; shiftAt >= 0 && !b.enabled && r.now.Sub(epoch) >= shiftAt+r.o.OperatorDelay {
			b.enabled, b.want, b.readyAt = true, 2, r.now.Add(r.o.ServiceStart) // enabled by hand
		}
		if err := r.claim(ctx, shiftAt); err != nil {
			return err
		}
		if next == len(r.tr.jobs) && r.idle() {
			return nil
		}
	}
}

// catchUp waits until the tracker has applied every message published so far, so its view
// is the one of this virtual second.
func (r *run) catchUp(ctx context.Context) {
	for r.tracker.Observed() < r.expected && ctx.Err() == nil {
		time.Sleep(50 * time.Microsecond)
	}
}

func (r *run) idle() bool {
	for _, c := range r.conns {
		for _, s := range c.slots {
			if s.j != nil {
				return false
			}
		}
	}
	return true
}

// finish completes the jobs whose time is up and drops slots the connector no longer wants.
func (r *run) finish(ctx context.Context) error {
	for _, c := range r.conns {
		for _, s := range c.slots {
			if s.j == nil || s.busyUntil.After(r.now) {
				continue
			}
			if err := r.b.Complete(ctx, s.j, s.worker, job.Result{Success: true}); err != nil {
				return err
			}
			for _, rel := range s.release {
				rel()
			}
			s.j, s.release, c.lastJob = nil, nil, r.now
		}
		want := c.want
		if !c.enabled {
			want = 0
		}
		extra := len(c.slots) - want
		c.slots = slices.DeleteFunc(c.slots, func(s *slot) bool {
			if extra > 0 && s.j == nil {
				extra--
				return true
			}
			return false
		})
		for len(c.slots) < want {
			c.workerNo++
			c.slots = append(c.slots, &slot{worker: fmt.Sprintf("sim-%s-%d", c.name, c.workerNo)})
		}
	}
	return nil
}
