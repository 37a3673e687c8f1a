package demand

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// Snapshot is the view at one moment, for /status, the console and the autoscaler.
type Snapshot struct {
	At          time.Time          `json:"at"`
	QueueLength int64              `json:"queue_length"`        // jobs:pending, all services
	Pending     map[string]int     `json:"pending"`             // known pending jobs by service
	Unattrib    int64              `json:"unattributed"`        // pending jobs not (yet) attributed to a service
	Rates       map[string]float64 `json:"arrivals_per_minute"` // by service
	Models      []Model            `json:"models"`              // most wanted first
}

// Model is the demand for one model.
type Model struct {
	Name    string  `json:"name"`
	Pending int     `json:"pending"` // pending jobs that reference it
	Recent  float64 `json:"recent"`  // references, halving every half-life
	Score   float64 `json:"score"`
}

// MaxSnapshotModels bounds the models a snapshot lists.
const MaxSnapshotModels = 50

// Snapshot returns the current view.
func (t *Tracker) Snapshot() Snapshot {
	now := t.p.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	s := Snapshot{At: now, QueueLength: t.queueLen, Pending: map[string]int{}, Rates: map[string]float64{}}
	known := 0
	for svc, n := range t.byService {
		s.Pending[svc] = n
		known += n
	}
	s.Unattrib = max(0, t.queueLen-int64(known))
	for svc, d := range t.rates {
		if r := t.rate(d, now); r > 0.001 {
			s.Rates[svc] = r
		}
	}
	s.Models = t.ranked(now, MaxSnapshotModels)
	return s
}

// rate converts a decayed count into arrivals per minute: a steady rate r accumulates to
// r·τ with τ = half-life / ln 2.
func (t *Tracker) rate(d *decayed, now time.Time) float64 {
	tau := t.p.HalfLife.Minutes() / math.Ln2
	return d.value(now, t.p.HalfLife) / tau
}

// score is a model's predicted demand: every pending job that needs it counts fully, recent
// references count as they decay.
func (t *Tracker) score(st *modelStat, now time.Time) float64 {
	return float64(st.pending) + st.recent.value(now, t.p.HalfLife)
}

func (t *Tracker) ranked(now time.Time, limit int) []Model {
	out := make([]Model, 0, len(t.models))
	for name, st := range t.models {
		m := Model{Name: name, Pending: st.pending, Recent: st.recent.value(now, t.p.HalfLife)}
		m.Score = float64(m.Pending) + m.Recent
		if m.Score > 1e-3 {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b Model) int {
		return cmp.Or(cmp.Compare(b.Score, a.Score), cmp.Compare(a.Name, b.Name))
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}

// ModelScore is the predicted demand for one model (0 when unknown): what the model cache
// weighs evictions with.
func (t *Tracker) ModelScore(name string) float64 {
	now := t.p.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if st := t.models[name]; st != nil {
		return t.score(st, now)
	}
	return 0
}

// Wanted returns up to limit models, most wanted first, that pending jobs of the given
// services reference (every service when services is nil): what the cache prefetches.
func (t *Tracker) Wanted(services []string, limit int) []string {
	now := t.p.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	names := map[string]bool{}
	for _, e := range t.jobs { // O(tracked), bounded by MaxTracked; called per prefetch round, not per job
		if services == nil || slices.Contains(services, e.service) {
			for _, n := range e.models {
				names[n] = true
			}
		}
	}
	var out []Model
	for n := range names {
		if st := t.models[n]; st != nil {
			out = append(out, Model{Name: n, Score: t.score(st, now)})
		}
	}
	slices.SortFunc(out, func(a, b Model) int {
		return cmp.Or(cmp.Compare(b.Score, a.Score), cmp.Compare(a.Name, b.Name))
	})
	res := make([]string, 0, min(limit, len(out)))
	for i := 0; i < len(out) && i < limit; i++ {
		res = append(res, out[i].Name)
	}
	return res
}

// PendingFor is the known pending jobs of one service.
func (t *Tracker) PendingFor(service string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byService[service]
}
