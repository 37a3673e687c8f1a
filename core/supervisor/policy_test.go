package supervisor_test

import (
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/supervisor"
)

func TestBackoffGrowsAndCaps(t *testing.T) {
	p := supervisor.Policy{Initial: time.Second, Factor: 1.5, Max: 5 * time.Second, StableAfter: time.Minute, MaxCrashes: 8}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	want := []time.Duration{1000, 1500, 2250, 3375, 5000, 5000, 5000, 5000}
	n := 0
	for i, w := range want {
		d := supervisor.Decide(p, n, t0, t0.Add(time.Second), "exit status 1")
		if !d.Restart || d.Delay != w*time.Millisecond || d.Consecutive != i+1 {
			t.Fatalf("crash %d: %+v, want a restart after %v", i+1, d, w*time.Millisecond)
		}
		n = d.Consecutive
	}
	d := supervisor.Decide(p, n, t0, t0.Add(time.Second), "exit status 1")
	if d.Restart || d.Reason != supervisor.ReasonCrashLoop || !strings.Contains(d.Message, "exit status 1") || !strings.Contains(d.Message, "/restart/service") {
		t.Fatalf("after %d crashes: %+v, want a crash loop with a clear message", n+1, d)
	}
}

func TestStableRunResetsTheCount(t *testing.T) {
	p := supervisor.DefaultPolicy
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := supervisor.Decide(p, 7, t0, t0.Add(p.StableAfter), "signal: killed")
	if !d.Restart || d.Consecutive != 1 || d.Delay != p.Initial {
		t.Fatalf("after a stable run: %+v, want the first delay again", d)
	}
}
