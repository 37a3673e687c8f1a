package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// KeyDurationStats is ours (additive): a hash of job durations per "service|model" (the first
// model a job's requirements name, "" for none) -> "ewma_ms,count". complete.lua writes it on
// every completion (EWMA weight 0.2); it holds at most MaxDurationStats fields (a new key past
// the cap replaces a random one) and expires DurationStatsTTL after the last write.
const (
	KeyDurationStats = "jobs:stats:duration"
	MaxDurationStats = 1024
	DurationStatsTTL = 7 * 24 * time.Hour
)

// Routing are the claim script's preferences (claim.lua's header). The zero value routes
// nothing: the first matching job in priority order, as emp.
type Routing struct {
	// Pool is the machine's MACHINE_POOL: its idle slots also wait for the wake tokens of jobs
	// that require this pool (relay.go). It changes nothing in the claim.
	Pool string
	// PoolMin and PoolMax bound the expected duration of the jobs this machine prefers
	// (PoolMax 0: no bound); both zero: no pool preference.
	PoolMin, PoolMax time.Duration
	// Aging is how long a job waits before a pool that it does not fit takes it.
	Aging time.Duration
	// AffinityK is how many eligible jobs the claim chooses among (≤ 1: no affinity), and
	// AffinityWindow how long a job may be passed over for one with affinity, counted from the
	// first claim that passed it over (the job's affinity_passed_ms).
	AffinityK      int
	AffinityWindow time.Duration
	// Cached lists, per service, the models on this machine's disk or in VRAM; nil: the
	// models advertised in the capabilities.
	Cached map[string][]string
	// LeaveMisses: a candidate whose models are not all cached is left to a machine that has
	// them (the claim takes a job that needs no model, or nothing) until it has been passed over
	// for AffinityWindow (MACHINE_AFFINITY_LEAVE).
	LeaveMisses bool
	// CachedNow, when set, is asked at every claim instead of Cached (a model cache's models
	// change as it downloads and evicts); an empty answer prefers nothing.
	CachedNow func() map[string][]string
	// WarmFor is how long after a completion a service counts as warm (0: 5 minutes).
	WarmFor time.Duration
	// MayLend, when set, says whether this claim may take an aged job that does not fit the
	// pool (false: the machine keeps its remaining idle slots for its own pool's jobs). Nil:
	// always.
	MayLend func() bool
}

// warmth remembers when this machine last completed a job of each service.
type warmth struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (w *warmth) ran(service string, at time.Time) {
	if service == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last == nil {
		w.last = map[string]time.Time{}
	}
	w.last[service] = at
}

func (w *warmth) since(cut time.Time) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for s, t := range w.last {
		if t.After(cut) {
			out = append(out, s)
		} else {
			delete(w.last, s)
		}
	}
	sort.Strings(out)
	return out
}

// SetClock replaces the broker's clock (time.Now): simulators run a fleet on simulated time.
// Call it before the slots start.
func (b *Broker) SetClock(now func() time.Time) { b.now = now }

// SetRouting sets the claim's preferences. Call it before the slots start.
func (b *Broker) SetRouting(r Routing) { b.routing = r }

// routingArg is the claim script's ARGV[9].
func (b *Broker) routingArg(now time.Time) []byte {
	r := b.routing
	if r.PoolMin <= 0 && r.PoolMax <= 0 && r.AffinityK <= 1 {
		return []byte("{}")
	}
	aging := r.Aging
	if aging <= 0 {
		aging = 30 * time.Second
	}
	arg := map[string]any{"aging_ms": aging.Milliseconds()}
	if r.PoolMin > 0 || r.PoolMax > 0 {
		arg["pool_min_ms"], arg["pool_max_ms"] = r.PoolMin.Milliseconds(), r.PoolMax.Milliseconds()
		if r.MayLend != nil && !r.MayLend() {
			arg["lend"] = false
		}
	}
	if r.AffinityK > 1 {
		warmFor := r.WarmFor
		if warmFor <= 0 {
			warmFor = 5 * time.Minute
		}
		arg["k"], arg["window_ms"] = r.AffinityK, r.AffinityWindow.Milliseconds()
		if warm := b.warm.since(now.Add(-warmFor)); len(warm) > 0 {
			arg["warm"] = warm
		}
		switch {
		case r.CachedNow != nil:
			cached := r.CachedNow()
			if cached == nil {
				cached = map[string][]string{} // {}: nothing cached, not the capabilities' models
			}
			arg["cached"] = cached
		case len(r.Cached) > 0:
			arg["cached"] = r.Cached
		}
		if r.LeaveMisses {
			arg["leave"] = true
		}
	}
	out, _ := json.Marshal(arg)
	return out
}

// StatsKey names a job's duration statistics in KeyDurationStats: "service|model", the model
// being the first that its requirements (or positive_requirements) name, "" for none. The claim
// script computes the same key (claim.lua's stats_key).
func StatsKey(service, requirements string) string {
	var req map[string]json.RawMessage
	_ = json.Unmarshal([]byte(requirements), &req)
	if pos, ok := req["positive_requirements"]; ok {
		var p map[string]json.RawMessage
		if json.Unmarshal(pos, &p) == nil && p != nil {
			req = p
		}
	}
	model := ""
	var one string
	var many []any
	if json.Unmarshal(req["models"], &one) == nil && one != "all" {
		model = one
	} else if json.Unmarshal(req["models"], &many) == nil && len(many) > 0 {
		model, _ = many[0].(string)
	}
	return service + "|" + model
}

// DurationStat is one field of KeyDurationStats.
type DurationStat struct {
	Service, Model string
	EWMA           time.Duration
	Count          int64
}

// DurationStats returns the duration statistics of these services (all when nil), most
// counted first, at most limit of them. The hash holds at most MaxDurationStats fields.
func (b *Broker) DurationStats(ctx context.Context, services []string, limit int) ([]DurationStat, error) {
	all, err := b.rdb.HGetAll(ctx, KeyDurationStats).Result()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", KeyDurationStats, err)
	}
	want := map[string]bool{}
	for _, s := range services {
		want[s] = true
	}
	var out []DurationStat
	for field, v := range all {
		svc, model, _ := strings.Cut(field, "|")
		if services != nil && !want[svc] {
			continue
		}
		ms, n, ok := strings.Cut(v, ",")
		ewma, err1 := strconv.ParseInt(ms, 10, 64)
		count, err2 := strconv.ParseInt(n, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			continue
		}
		out = append(out, DurationStat{Service: svc, Model: model, EWMA: time.Duration(ewma) * time.Millisecond, Count: count})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Service+"|"+out[i].Model < out[j].Service+"|"+out[j].Model
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
