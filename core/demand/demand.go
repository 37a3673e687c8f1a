// Package demand keeps a rolling view of what the queue wants: pending jobs by service, the
// arrival rate of each service, and the models that pending and recent jobs reference. The
// model cache ranks and prefetches models from it; the autoscaler sizes connectors from it.
//
// Cost is bounded, whatever the queue length. The view is kept incrementally from the broker's
// messages: job_submitted adds a job (its payload is in the message, so no read is needed),
// job_claimed and cancel_job remove it, job_requeued puts it back. Nothing is read from Redis
// per message. Messages lost while disconnected, jobs submitted before the machine started and
// jobs taken by old workers are repaired by a periodic reconciliation that costs at most
// ZCARD + ZMSCORE over the jobs already tracked (capped at MaxTracked) + a window of
// HeadWindow ids at the head of jobs:pending, of which at most HeadReads unknown jobs are read.
// Jobs past the cap or the window are counted as unattributed, never scanned.
package demand

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
)

// Params configure a Tracker; zero fields take the defaults.
type Params struct {
	Client         redis.UniversalClient
	Log            *slog.Logger
	Now            func() time.Time // the clock; time.Now by default (the simulation injects one)
	HalfLife       time.Duration    // of arrival rates and model recency; 5 minutes
	ReconcileEvery time.Duration    // 15 seconds
	HeadWindow     int              // ids at the head of jobs:pending looked at per reconciliation; 500
	HeadReads      int              // unknown jobs read per reconciliation; 100
	MaxTracked     int              // pending jobs remembered; 20,000
	MaxModels      int              // models remembered; 4,096
	MaxServices    int              // services remembered; 256 (service names come from untrusted jobs)
}

func (p *Params) defaults() {
	if p.Log == nil {
		p.Log = slog.Default()
	}
	if p.Now == nil {
		p.Now = time.Now
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if p.HalfLife <= 0 {
		p.HalfLife = 5 * time.Minute
	}
	if p.ReconcileEvery <= 0 {
		p.ReconcileEvery = 15 * time.Second
	}
	def(&p.HeadWindow, 500)
	def(&p.HeadReads, 100)
	def(&p.MaxTracked, 20_000)
	def(&p.MaxModels, 4096)
	def(&p.MaxServices, 256)
}

// Tracker is the rolling view. Its methods are safe for concurrent use.
type Tracker struct {
	p        Params // immutable after New
	observed atomic.Uint64

	mu        sync.Mutex
	jobs      map[string]entry // pending jobs known, by id
	byService map[string]int   // pending jobs known, by service
	rates     map[string]*decayed
	models    map[string]*modelStat
	queueLen  int64
}

type entry struct {
	service string
	models  []string
}

// decayed is a sum of unit events that halves every half-life.
type decayed struct {
	v  float64
	at time.Time
}

func (d *decayed) value(now time.Time, half time.Duration) float64 {
	dt := now.Sub(d.at)
	if dt <= 0 {
		return d.v
	}
	return d.v * math.Exp2(-float64(dt)/float64(half))
}

func (d *decayed) add(now time.Time, half time.Duration) {
	d.v, d.at = d.value(now, half)+1, now
}

type modelStat struct {
	pending int
	recent  decayed
}

// New returns an empty tracker; Run fills it.
func New(p Params) *Tracker {
	p.defaults()
	return &Tracker{p: p, jobs: map[string]entry{}, byService: map[string]int{},
		rates: map[string]*decayed{}, models: map[string]*modelStat{}}
}

// Run follows the broker's messages and reconciles every ReconcileEvery until ctx ends. A lost
// subscription is re-established by the client; the reconciliation repairs what was missed.
func (t *Tracker) Run(ctx context.Context) error {
	ps := t.p.Client.Subscribe(ctx, broker.ChanSubmitted, broker.ChanClaimed, broker.ChanCancel, broker.ChanRequeued)
	defer ps.Close()
	msgs := ps.Channel(redis.WithChannelSize(1024))
	tick := time.NewTicker(t.p.ReconcileEvery)
	defer tick.Stop()
	if err := t.Reconcile(ctx); err != nil && ctx.Err() == nil {
		t.p.Log.Warn("demand: reconciliation failed; trying again later", "err", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-msgs:
			if !ok {
				return nil
			}
			t.Observe(m.Channel, []byte(m.Payload))
		case <-tick.C:
			if err := t.Reconcile(ctx); err != nil && ctx.Err() == nil {
				t.p.Log.Warn("demand: reconciliation failed; trying again later", "err", err)
			}
		}
	}
}

// message is the part of the broker's messages the tracker reads.
type message struct {
	JobID        string          `json:"job_id"`
	Service      string          `json:"service_required"`
	Payload      json.RawMessage `json:"payload"`
	Requirements json.RawMessage `json:"requirements"`
}

// Observe applies one broker message. Oversize or malformed messages are ignored: the
// reconciliation accounts for their jobs.
func (t *Tracker) Observe(channel string, payload []byte) {
	defer t.observed.Add(1)
	if len(payload) > MaxPayloadBytes+64<<10 {
		return
	}
	var m message
	if json.Unmarshal(payload, &m) != nil || m.JobID == "" || len(m.JobID) > MaxNameLen {
		return
	}
	switch channel {
	case broker.ChanSubmitted:
		t.submitted(m.JobID, m.Service, Models(m.Payload, m.Requirements), true)
	case broker.ChanRequeued:
		t.submitted(m.JobID, m.Service, nil, false)
	case broker.ChanClaimed, broker.ChanCancel:
		t.gone(m.JobID)
	}
}

// submitted records a pending job; arrival says it is new (it counts in the rate and recency).
func (t *Tracker) submitted(id, service string, models []string, arrival bool) {
	if service == "" || len(service) > MaxNameLen {
		return
	}
	now := t.p.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, known := t.rates[service]; !known && len(t.rates) >= t.p.MaxServices {
		return // an unknown service past the cap: counted as unattributed
	}
	if t.rates[service] == nil {
		t.rates[service] = &decayed{at: now}
	}
	if arrival {
		t.rates[service].add(now, t.p.HalfLife)
		for _, name := range models {
			if st := t.model(name, now); st != nil {
				st.recent.add(now, t.p.HalfLife)
			}
		}
	}
	if _, dup := t.jobs[id]; dup || len(t.jobs) >= t.p.MaxTracked {
		return
	}
	t.jobs[id] = entry{service: service, models: models}
	t.byService[service]++
	for _, name := range models {
		if st := t.model(name, now); st != nil {
			st.pending++
		}
	}
}

// model returns the stat of name, making room for it when the table is full by forgetting
// the model with the least demand; nil when every remembered model is wanted more.
func (t *Tracker) model(name string, now time.Time) *modelStat {
	if st := t.models[name]; st != nil {
		return st
	}
	if len(t.models) >= t.p.MaxModels {
		victim, low := "", math.Inf(1)
		for n, st := range t.models { // O(MaxModels), only when a new model arrives at the cap
			if s := t.score(st, now); st.pending == 0 && s < low {
				victim, low = n, s
			}
		}
		if victim == "" {
			return nil
		}
		delete(t.models, victim)
	}
	st := &modelStat{recent: decayed{at: now}}
	t.models[name] = st
	return st
}

func (t *Tracker) gone(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.forget(id)
}

func (t *Tracker) forget(id string) {
	e, ok := t.jobs[id]
	if !ok {
		return
	}
	delete(t.jobs, id)
	if t.byService[e.service]--; t.byService[e.service] <= 0 {
		delete(t.byService, e.service)
	}
	for _, name := range e.models {
		if st := t.models[name]; st != nil && st.pending > 0 {
			st.pending--
		}
	}
}

// Observed counts the messages Observe was given: how a caller (the simulation, a test)
// knows the tracker has caught up with what it published.
func (t *Tracker) Observed() uint64 { return t.observed.Load() }

// Reconcile repairs the view against Redis at bounded cost (see the package comment).
func (t *Tracker) Reconcile(ctx context.Context) error {
	rdb := t.p.Client
	n, err := rdb.ZCard(ctx, broker.KeyPending).Result()
	if err != nil {
		return fmt.Errorf("demand: queue length: %w", err)
	}
	t.mu.Lock()
	ids := make([]string, 0, len(t.jobs))
	for id := range t.jobs {
		ids = append(ids, id)
	}
	t.queueLen = n
	t.mu.Unlock()

	// Forget tracked jobs that left the queue without a message we saw.
	for chunk := range slices.Chunk(ids, 1000) {
		args := []any{"ZMSCORE", broker.KeyPending}
		for _, id := range chunk {
			args = append(args, id)
		}
		scores, err := rdb.Do(ctx, args...).Slice()
		if err != nil {
			return fmt.Errorf("demand: check tracked jobs: %w", err)
		}
		t.mu.Lock()
		for i, s := range scores {
			if s == nil {
				t.forget(chunk[i])
			}
		}
		t.mu.Unlock()
	}

	// Learn the jobs at the head of the queue we have not seen (submitted before we started,
	// or whose message was lost): they are the ones claimed next.
	head, err := rdb.ZRevRange(ctx, broker.KeyPending, 0, int64(t.p.HeadWindow-1)).Result()
	if err != nil {
		return fmt.Errorf("demand: read queue head: %w", err)
	}
	t.mu.Lock()
	var unknown []string
	for _, id := range head {
		if _, ok := t.jobs[id]; !ok && len(unknown) < t.p.HeadReads {
			unknown = append(unknown, id)
		}
	}
	t.mu.Unlock()
	return t.learn(ctx, unknown)
}

// learn reads the service and models of the given jobs: the payload only when it is small
// enough to parse.
func (t *Tracker) learn(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	rdb := t.p.Client
	pipe := rdb.Pipeline()
	fields := make([]*redis.SliceCmd, len(ids))
	sizes := make([]*redis.IntCmd, len(ids))
	for i, id := range ids {
		fields[i] = pipe.HMGet(ctx, broker.JobKey(id), "service_required", "requirements")
		sizes[i] = pipe.HStrLen(ctx, broker.JobKey(id), "payload")
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return fmt.Errorf("demand: read queued jobs: %w", err)
	}
	pipe = rdb.Pipeline()
	payloads := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		if sizes[i].Val() > 0 && sizes[i].Val() <= MaxPayloadBytes {
			payloads[i] = pipe.HGet(ctx, broker.JobKey(id), "payload")
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return fmt.Errorf("demand: read queued payloads: %w", err)
	}
	for i, id := range ids {
		vals := fields[i].Val()
		if len(vals) != 2 {
			continue
		}
		service, _ := vals[0].(string)
		reqs, _ := vals[1].(string)
		var payload string
		if payloads[i] != nil {
			payload = payloads[i].Val()
		}
		t.submitted(id, service, Models([]byte(payload), []byte(reqs)), false)
	}
	return nil
}
