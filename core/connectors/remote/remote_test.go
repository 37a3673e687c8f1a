package remote

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/connectors/throttle"
	"github.com/emp-job-queue/machine/core/job"
)

// Cutting a secret out of an error keeps what callers test for.
func TestRedactionKeepsTheErrorChain(t *testing.T) {
	const secret = "sk-live-0123456789"
	c := New(Options{Name: "API", Secrets: []string{secret}})
	err := c.redact(fmt.Errorf("calling with %s: %w", secret, ErrUnavailable))
	if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), secret[:len(secret)/2]) {
		t.Errorf("the secret is still in %q", err)
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("errors.Is(%q, ErrUnavailable) = false after redaction", err)
	}
	if perm := c.redact(job.Permanent(fmt.Errorf("key %s refused", secret))); !job.IsPermanent(perm) || strings.Contains(perm.Error(), secret) {
		t.Errorf("a permanent error after redaction: %q permanent=%v", perm, job.IsPermanent(perm))
	}
}

// The observer hears every 429 with its Retry-After, the breaker opening after repeated
// failures, and each failed request with the key cut out, from a real HTTP server.
func TestObserverHearsThrottling(t *testing.T) {
	const secret = "sk-live-0123456789"
	var calls atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 {
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":{"message":"Rate limit reached for key ` + secret + `","code":"rate_limit_exceeded"}}`))
			return
		}
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer api.Close()
	rec := throttle.New(nil)
	c := New(Options{Name: "API", MaxTries: 1, BreakAfter: 3, BreakFor: time.Hour, Secrets: []string{secret}, Observer: rec})
	if st := rec.State(); st.Breaker != throttle.Closed || st.BreakerSince.IsZero() {
		t.Fatalf("a new client's breaker = %q since %v, want closed", st.Breaker, st.BreakerSince)
	}
	for range 4 {
		_, _, _ = c.Do(context.Background(), func(ctx context.Context) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodGet, api.URL, nil)
		})
	}
	st := rec.State()
	if st.RateLimitedTotal != 2 || st.RecentRateLimits(time.Now()) != 2 || st.RetryAfter != 7*time.Second {
		t.Errorf("429s = %d (recent %d), Retry-After %s; want 2, 2, 7s", st.RateLimitedTotal, st.RecentRateLimits(time.Now()), st.RetryAfter)
	}
	if st.Breaker != throttle.Open || !st.Throttled(time.Now()) || c.Available() {
		t.Errorf("after 3 failures the breaker is %q (available %v), want open", st.Breaker, c.Available())
	}
	if len(st.Errors) != 3 || !strings.Contains(st.Errors[0].Text, "429") || !strings.Contains(st.Errors[2].Text, "502") {
		t.Errorf("errors = %+v, want the two 429s and the 502 (the fourth call never left)", st.Errors)
	}
	for _, e := range st.Errors {
		if strings.Contains(e.Text, secret[:len(secret)/2]) {
			t.Errorf("an error keeps the key: %q", e.Text)
		}
	}
}

func TestRetryAfterForms(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for h, want := range map[string]time.Duration{"": 0, "3": 3 * time.Second, "x": 0, "-1": 0,
		now.Add(20 * time.Second).Format(http.TimeFormat): 20 * time.Second, now.Add(-time.Hour).Format(http.TimeFormat): 0} {
		if got := retryAfter(h, now); got != want {
			t.Errorf("Retry-After %q = %s, want %s", h, got, want)
		}
	}
}
