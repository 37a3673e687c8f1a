// Package autoscale decides how many slots each connector should run, which allowed connectors
// to pre-warm, and which idle ones to stop. It only proposes: Decide is a pure function of the
// policy, the time, each connector's demand and load, the machine's headroom and the previous
// decisions; the machine's reconciler applies each Decision as one typed layout change
// (Enable → enable, Resize → set concurrency, Disable → disable), checked against the
// configuration's bounds like any operator change.
//
// It never flaps: growing and shrinking use asymmetric thresholds (grow as soon as queued work
// exceeds the slots; shrink only when load stays under ShrinkBelow of the slots for
// ShrinkAfter), and a connector is never changed in the opposite direction of its last change
// within Cooldown.
package autoscale

import (
	"fmt"
	"slices"
	"time"
)

// Kind is the layout change a decision asks for.
type Kind string

const (
	Enable  Kind = "enable"  // start the connector (installing and starting its service): pre-warm
	Resize  Kind = "resize"  // set its slot count
	Disable Kind = "disable" // stop it and the services no other connector needs: idle eviction
)

// Decision is one proposed change with the reason for it.
type Decision struct {
	At        time.Time `json:"at"`
	Kind      Kind      `json:"kind"`
	Connector string    `json:"connector"`
	From      int       `json:"from"`            // slots before (0: not enabled)
	Count     int       `json:"count,omitempty"` // slots, for Enable and Resize
	Reason    string    `json:"reason"`
}

func (d Decision) String() string {
	if d.Kind == Disable {
		return fmt.Sprintf("disable %s: %s", d.Connector, d.Reason)
	}
	return fmt.Sprintf("%s %s to %d slot(s): %s", d.Kind, d.Connector, d.Count, d.Reason)
}

// direction of a change: +1 grows (enable, more slots), -1 shrinks.
func (d Decision) direction() int {
	if d.Kind == Disable || d.Count < d.From {
		return -1
	}
	return +1
}

// Bounds are a connector's slot limits.
type Bounds struct{ Min, Max int }

// Policy is the autoscaler's configuration (core/config's MACHINE_AUTOSCALE_* settings).
type Policy struct {
	Off         bool              // MACHINE_AUTOSCALE=off: no decisions at all
	Bounds      map[string]Bounds // per connector; a connector without bounds is never resized
	Allowed     []string          // MACHINE_ALLOWED_CONNECTORS: may be started on demand and stopped when idle
	Pinned      []string          // never stopped when idle
	IdleTTL     time.Duration     // MACHINE_SERVICE_IDLE_TTL; 0: never stop idle connectors
	Cooldown    time.Duration     // no reversal of a connector's last change within it
	ShrinkAfter time.Duration     // load must stay low this long before a slot goes
	ShrinkBelow float64           // low load: busy+pending under this fraction of the slots
	Headroom    Limits
}

// Limits are the headroom a connector needs before the autoscaler adds work to the machine.
type Limits struct {
	MinFreeGPUMemGB float64 // for GPU-bound connectors
	MaxGPUUtil      float64 // 0..1, for GPU-bound connectors
	MinFreeRAMGB    float64
	MaxCPU          float64 // 0..1
}

// Headroom is what the machine has free now (from the GPU sampler and host metrics).
type Headroom struct {
	GPUFreeMemGB float64
	GPUUtil      float64 // 0..1, busiest GPU
	RAMFreeGB    float64
	CPU          float64 // 0..1
}

// Connector is one connector's situation.
type Connector struct {
	Name      string
	Enabled   bool
	Slots     int
	Busy      int       // slots running a job
	Pending   int       // queued jobs for its services (core/demand)
	LastJob   time.Time // when a job last ran on it; zero: never
	GPU       bool      // needs GPU headroom to grow
	Throttled bool      // recent 429s or a breaker that is not closed (API connectors)
	// ThrottledWhy says how the API pushes back ("3 × 429 in the last minute", "breaker open"),
	// for the decision's reason.
	ThrottledWhy string
}

// History is what Decide remembers between calls; the zero value is empty. Decide returns the
// next one, leaving its argument untouched.
type History struct {
	Last     map[string]Change    // the last change of each connector
	LowSince map[string]time.Time // since when its load has been low
}

// Change is a connector's last change.
type Change struct {
	At        time.Time
	Direction int // +1 grew, -1 shrank
}

// Decide proposes the changes for this moment. Connectors are considered in name order, so the
// same inputs give the same decisions.
func Decide(p Policy, now time.Time, conns []Connector, h Headroom, hist History) ([]Decision, History) {
	if p.Off {
		return nil, hist
	}
	next := History{Last: map[string]Change{}, LowSince: map[string]time.Time{}}
	for k, v := range hist.Last {
		next.Last[k] = v
	}
	for k, v := range hist.LowSince {
		next.LowSince[k] = v
	}
	conns = slices.Clone(conns)
	slices.SortFunc(conns, func(a, b Connector) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	var out []Decision
	for _, c := range conns {
		d, ok := decideOne(p, now, c, h, next)
		if !ok {
			continue
		}
		d.At = now
		if c.Enabled {
			d.From = c.Slots
		}
		out = append(out, d)
		next.Last[c.Name] = Change{At: now, Direction: d.direction()}
		delete(next.LowSince, c.Name)
	}
	return out, next
}

func decideOne(p Policy, now time.Time, c Connector, h Headroom, hist History) (Decision, bool) {
	allowed := slices.Contains(p.Allowed, c.Name)
	b, sized := p.Bounds[c.Name]
	// canTurn says whether a change in direction dir is allowed now.
	canTurn := func(dir int) bool {
		last, ok := hist.Last[c.Name]
		return !ok || last.Direction == dir || now.Sub(last.At) >= p.Cooldown
	}
	room, why := roomFor(p.Headroom, c, h)

	if !c.Enabled {
		if !allowed || c.Pending == 0 || !canTurn(+1) {
			return Decision{}, false
		}
		if !room {
			return Decision{}, false
		}
		n := 1
		if sized {
			n = clamp(c.Pending, max(b.Min, 1), b.Max)
		}
		return Decision{Kind: Enable, Connector: c.Name, Count: n,
			Reason: fmt.Sprintf("pre-warm: %d job(s) wait for it and no slot serves them; %s", c.Pending, why)}, true
	}

	load := c.Busy + c.Pending
	if float64(load) < p.ShrinkBelow*float64(c.Slots) || load == 0 {
		if _, ok := hist.LowSince[c.Name]; !ok {
			hist.LowSince[c.Name] = now
		}
	} else {
		delete(hist.LowSince, c.Name)
	}

	// Idle eviction: only connectors the machine may start on demand, never pinned ones.
	if allowed && !slices.Contains(p.Pinned, c.Name) && p.IdleTTL > 0 && load == 0 && canTurn(-1) {
		idleFor := now.Sub(c.LastJob)
		if !c.LastJob.IsZero() && idleFor >= p.IdleTTL {
			return Decision{Kind: Disable, Connector: c.Name,
				Reason: fmt.Sprintf("idle for %s (MACHINE_SERVICE_IDLE_TTL %s) with no job waiting: frees its memory", idleFor.Round(time.Second), p.IdleTTL)}, true
		}
	}
	if !sized {
		return Decision{}, false
	}
	// Throttled: one slot fewer per Cooldown while the API keeps pushing back (a burst of 429s
	// counts for a minute, and one slot fewer is one step, not a slide to Min), and no growth.
	if c.Throttled {
		last, changed := hist.Last[c.Name]
		shrankLately := changed && last.Direction < 0 && now.Sub(last.At) < p.Cooldown
		if c.Slots > b.Min && !shrankLately && canTurn(-1) {
			why := c.ThrottledWhy
			if why == "" {
				why = "429s or an open breaker"
			}
			return Decision{Kind: Resize, Connector: c.Name, Count: c.Slots - 1,
				Reason: fmt.Sprintf("throttled by the API (%s); one slot fewer until it recovers", why)}, true
		}
		return Decision{}, false
	}
	if c.Pending > 0 && load > c.Slots && c.Slots < b.Max && canTurn(+1) && room {
		n := clamp(load, c.Slots+1, b.Max)
		return Decision{Kind: Resize, Connector: c.Name, Count: n,
			Reason: fmt.Sprintf("%d job(s) queued and %d running for %d slot(s); %s", c.Pending, c.Busy, c.Slots, why)}, true
	}
	since, low := hist.LowSince[c.Name]
	if low && now.Sub(since) >= p.ShrinkAfter && c.Slots > b.Min && c.Busy < c.Slots && canTurn(-1) {
		return Decision{Kind: Resize, Connector: c.Name, Count: c.Slots - 1,
			Reason: fmt.Sprintf("load %d on %d slot(s) for %s: one slot fewer", load, c.Slots, now.Sub(since).Round(time.Second))}, true
	}
	return Decision{}, false
}

// roomFor says whether the machine can take more of c, and what it has free.
func roomFor(l Limits, c Connector, h Headroom) (bool, string) {
	switch {
	case c.GPU && l.MinFreeGPUMemGB > 0 && h.GPUFreeMemGB < l.MinFreeGPUMemGB:
		return false, fmt.Sprintf("only %.1f GB GPU memory free", h.GPUFreeMemGB)
	case c.GPU && l.MaxGPUUtil > 0 && h.GPUUtil > l.MaxGPUUtil:
		return false, fmt.Sprintf("GPU %.0f%% busy", h.GPUUtil*100)
	case l.MinFreeRAMGB > 0 && h.RAMFreeGB < l.MinFreeRAMGB:
		return false, fmt.Sprintf("only %.1f GB RAM free", h.RAMFreeGB)
	case l.MaxCPU > 0 && h.CPU > l.MaxCPU:
		return false, fmt.Sprintf("CPU %.0f%% busy", h.CPU*100)
	}
	if c.GPU {
		return true, fmt.Sprintf("%.1f GB GPU memory and %.1f GB RAM free", h.GPUFreeMemGB, h.RAMFreeGB)
	}
	return true, fmt.Sprintf("%.1f GB RAM free, CPU %.0f%% busy", h.RAMFreeGB, h.CPU*100)
}

func clamp(v, lo, hi int) int { return max(lo, min(v, hi)) }

// Flaps counts reversals in a decision log: a connector changed in one direction and then the
// other within window. Enable counts as growth and Disable as shrinking.
func Flaps(log []Decision, window time.Duration) int {
	last := map[string]Change{}
	flaps := 0
	for _, d := range log {
		dir := d.direction()
		if l, ok := last[d.Connector]; ok && l.Direction != dir && d.At.Sub(l.At) < window {
			flaps++
		}
		last[d.Connector] = Change{At: d.At, Direction: dir}
	}
	return flaps
}
