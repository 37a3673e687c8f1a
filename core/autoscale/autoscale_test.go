package autoscale_test

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/autoscale"
)

var t0 = time.Unix(1_700_000_000, 0)

func policy() autoscale.Policy {
	return autoscale.Policy{
		Bounds:      map[string]autoscale.Bounds{"openai": {Min: 1, Max: 8}, "comfyui": {Min: 1, Max: 2}},
		Allowed:     []string{"comfyui", "playwright"},
		IdleTTL:     10 * time.Minute,
		Cooldown:    2 * time.Minute,
		ShrinkAfter: time.Minute,
		ShrinkBelow: 0.5,
		Headroom:    autoscale.Limits{MinFreeGPUMemGB: 8, MaxGPUUtil: 0.95, MinFreeRAMGB: 2, MaxCPU: 0.9},
	}
}

var roomy = autoscale.Headroom{GPUFreeMemGB: 40, GPUUtil: 0.1, RAMFreeGB: 64, CPU: 0.2}

func TestDecide(t *testing.T) {
	tests := []struct {
		name   string
		conn   autoscale.Connector
		head   autoscale.Headroom
		hist   autoscale.History
		want   string // Decision.String() prefix; "" for none
		reason string // in the reason
	}{
		{"pre-warm an allowed connector jobs wait for", autoscale.Connector{Name: "comfyui", Pending: 3, GPU: true},
			roomy, autoscale.History{}, "enable comfyui to 2 slot(s)", "pre-warm: 3 job(s)"},
		{"no pre-warm without GPU memory", autoscale.Connector{Name: "comfyui", Pending: 3, GPU: true},
			autoscale.Headroom{GPUFreeMemGB: 2, RAMFreeGB: 64}, autoscale.History{}, "", ""},
		{"no pre-warm of a connector not allowed", autoscale.Connector{Name: "runpod", Pending: 3},
			roomy, autoscale.History{}, "", ""},
		{"no pre-warm without demand", autoscale.Connector{Name: "playwright"}, roomy, autoscale.History{}, "", ""},
		{"grow to the load", autoscale.Connector{Name: "openai", Enabled: true, Slots: 2, Busy: 2, Pending: 3},
			roomy, autoscale.History{}, "resize openai to 5 slot(s)", "3 job(s) queued and 2 running"},
		{"grow no further than max", autoscale.Connector{Name: "openai", Enabled: true, Slots: 2, Busy: 2, Pending: 30},
			roomy, autoscale.History{}, "resize openai to 8 slot(s)", ""},
		{"no growth when the CPU is busy", autoscale.Connector{Name: "openai", Enabled: true, Slots: 2, Busy: 2, Pending: 3},
			autoscale.Headroom{RAMFreeGB: 64, CPU: 0.99}, autoscale.History{}, "", ""},
		{"throttled: one slot fewer", autoscale.Connector{Name: "openai", Enabled: true, Slots: 4, Busy: 4, Pending: 9, Throttled: true},
			roomy, autoscale.History{}, "resize openai to 3 slot(s)", "throttled"},
		{"throttled again soon after a throttled shrink: nothing", autoscale.Connector{Name: "openai", Enabled: true, Slots: 3, Busy: 3, Pending: 9, Throttled: true},
			roomy, autoscale.History{Last: map[string]autoscale.Change{"openai": {At: t0.Add(-time.Minute), Direction: -1}}}, "", ""},
		{"still throttled a cooldown later: one more slot fewer", autoscale.Connector{Name: "openai", Enabled: true, Slots: 3, Busy: 3, Pending: 9,
			Throttled: true, ThrottledWhy: "breaker open"},
			roomy, autoscale.History{Last: map[string]autoscale.Change{"openai": {At: t0.Add(-3 * time.Minute), Direction: -1}}}, "resize openai to 2 slot(s)", "throttled by the API (breaker open)"},
		{"throttled at min: nothing", autoscale.Connector{Name: "openai", Enabled: true, Slots: 1, Busy: 1, Pending: 9, Throttled: true},
			roomy, autoscale.History{}, "", ""},
		{"low load not yet long enough", autoscale.Connector{Name: "openai", Enabled: true, Slots: 4, Busy: 1},
			roomy, autoscale.History{}, "", ""},
		{"low load long enough: one slot fewer", autoscale.Connector{Name: "openai", Enabled: true, Slots: 4, Busy: 1},
			roomy, autoscale.History{LowSince: map[string]time.Time{"openai": t0.Add(-2 * time.Minute)}}, "resize openai to 3 slot(s)", "load 1 on 4"},
		{"no shrink soon after growing", autoscale.Connector{Name: "openai", Enabled: true, Slots: 4, Busy: 1},
			roomy, autoscale.History{LowSince: map[string]time.Time{"openai": t0.Add(-2 * time.Minute)},
				Last: map[string]autoscale.Change{"openai": {At: t0.Add(-time.Minute), Direction: +1}}}, "", ""},
		{"idle past the TTL: stopped", autoscale.Connector{Name: "comfyui", Enabled: true, Slots: 1, LastJob: t0.Add(-11 * time.Minute), GPU: true},
			roomy, autoscale.History{}, "disable comfyui", "idle for 11m0s"},
		{"idle but a job waits: kept", autoscale.Connector{Name: "comfyui", Enabled: true, Slots: 1, Pending: 1, LastJob: t0.Add(-11 * time.Minute), GPU: true},
			roomy, autoscale.History{}, "", ""},
		{"idle boot connector (not allowed): kept", autoscale.Connector{Name: "openai", Enabled: true, Slots: 1, LastJob: t0.Add(-time.Hour)},
			roomy, autoscale.History{}, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ds, _ := autoscale.Decide(policy(), t0, []autoscale.Connector{tc.conn}, tc.head, tc.hist)
			if tc.want == "" {
				if len(ds) != 0 {
					t.Fatalf("decided %v, want nothing", ds)
				}
				return
			}
			if len(ds) != 1 || !strings.HasPrefix(ds[0].String(), tc.want) || !strings.Contains(ds[0].Reason, tc.reason) {
				t.Fatalf("decided %v, want %q (reason with %q)", ds, tc.want, tc.reason)
			}
		})
	}
}

func TestPinnedIsNeverEvicted(t *testing.T) {
	p := policy()
	p.Pinned = []string{"comfyui"}
	c := autoscale.Connector{Name: "comfyui", Enabled: true, Slots: 1, LastJob: t0.Add(-time.Hour), GPU: true}
	if ds, _ := autoscale.Decide(p, t0, []autoscale.Connector{c}, roomy, autoscale.History{}); len(ds) != 0 {
		t.Fatalf("pinned connector: %v", ds)
	}
}

func TestOffDecidesNothing(t *testing.T) {
	p := policy()
	p.Off = true
	conns := []autoscale.Connector{{Name: "comfyui", Pending: 50, GPU: true},
		{Name: "openai", Enabled: true, Slots: 1, Busy: 1, Pending: 50}}
	if ds, _ := autoscale.Decide(p, t0, conns, roomy, autoscale.History{}); ds != nil {
		t.Fatalf("MACHINE_AUTOSCALE=off decided %v", ds)
	}
}

// oscillate runs an hour of demand that swings between a burst and nothing every 7 seconds,
// the slots following the decisions, and returns the decisions.
func oscillate(p autoscale.Policy) []autoscale.Decision {
	rng := rand.New(rand.NewPCG(1, 2))
	slots := 1
	var hist autoscale.History
	var log []autoscale.Decision
	for i := range 3600 {
		now := t0.Add(time.Duration(i) * time.Second)
		pending, busy := 0, 0
		if (i/7)%2 == 0 {
			pending, busy = rng.IntN(12), slots
		}
		c := autoscale.Connector{Name: "openai", Enabled: true, Slots: slots, Busy: busy, Pending: pending, LastJob: now}
		ds, next := autoscale.Decide(p, now, []autoscale.Connector{c}, roomy, hist)
		hist = next
		for _, d := range ds {
			slots = d.Count
		}
		log = append(log, ds...)
	}
	return log
}

// The autoscaler adapts to oscillating demand but never reverses a connector within its
// cooldown.
func TestOscillatingDemandNeverFlaps(t *testing.T) {
	p := policy()
	log := oscillate(p)
	if len(log) == 0 {
		t.Fatal("no decisions: the test proves nothing")
	}
	if f := autoscale.Flaps(log, p.Cooldown); f != 0 {
		t.Fatalf("%d flaps in %d decisions: %v", f, len(log), log)
	}
	// The same trace without hysteresis does flap: Flaps can see a reversal.
	p.Cooldown, p.ShrinkAfter = 0, 0
	if autoscale.Flaps(oscillate(p), 2*time.Minute) == 0 {
		t.Fatal("without hysteresis the oscillating demand should flap")
	}
}
