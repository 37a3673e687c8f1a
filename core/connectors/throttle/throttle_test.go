package throttle

import (
	"strings"
	"testing"
	"time"
)

// The record counts 429s within the window only, keeps bounded rings, publishes copies that
// later events do not change, and says why the connector is throttled.
func TestRecorder(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var published []State
	r := New(func(s State) { published = append(published, s) })
	r.now = func() time.Time { return now }
	r.BreakerChanged(Closed)
	r.RateLimited(2 * time.Second)
	first := r.State()
	now = now.Add(30 * time.Second)
	for range 100 {
		r.RateLimited(0)
	}
	for i := range 8 {
		r.Failed(strings.Repeat("x", 400) + string(rune('a'+i)))
	}
	s := r.State()
	if got := s.RecentRateLimits(now); got != 64 || s.RateLimitedTotal != 101 || s.RetryAfter != 0 {
		t.Errorf("recent %d total %d retry-after %s, want 64 kept, 101 counted, 0", got, s.RateLimitedTotal, s.RetryAfter)
	}
	if len(first.RateLimited) != 1 || first.RetryAfter != 2*time.Second {
		t.Errorf("an earlier state changed: %+v", first)
	}
	if len(s.Errors) != 5 || !strings.HasSuffix(s.Errors[0].Text, "…") || len([]rune(s.Errors[0].Text)) != 301 {
		t.Errorf("errors: %d kept, first %q", len(s.Errors), s.Errors[0].Text)
	}
	if !s.Throttled(now) || s.Why(now) != "64 × 429 in the last minute" {
		t.Errorf("throttled %v, why %q", s.Throttled(now), s.Why(now))
	}
	if later := now.Add(Window); s.Throttled(later) || s.Why(later) != "" {
		t.Errorf("a minute after the last 429: throttled %v (%q)", s.Throttled(later), s.Why(later))
	}
	r.BreakerChanged(Open)
	if s := r.State(); !s.Throttled(now.Add(time.Hour)) || s.Why(now) != "breaker open" || !s.BreakerSince.Equal(now) {
		t.Errorf("open breaker: %+v", s)
	}
	if len(published) != 1+1+100+8+1 {
		t.Errorf("published %d states", len(published))
	}
	var none *Recorder
	none.RateLimited(time.Second)
	none.Failed("x")
	if none.State().Throttled(now) {
		t.Error("a nil recorder says throttled")
	}
}
