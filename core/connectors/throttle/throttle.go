// Package throttle is the per-connector record of how a remote API pushes back: the 429s it
// answered (rate limited), the last Retry-After it gave, the circuit breaker's state and when
// it changed, and the last errors, their secrets already cut.
//
// core/connectors/remote reports into a Recorder (through its Observer option); the machine
// hands one Recorder per connector to the connector's descriptor (connectors.Env.Throttle) and
// keeps the States it publishes in the state store, where /status, the metrics, the console's
// describe view and the autoscaler read them.
package throttle

import (
	"fmt"
	"slices"
	"sync"
	"time"
	"unicode/utf8"
)

// Breaker is a circuit breaker's state.
type Breaker string

const (
	Closed   Breaker = "closed"    // requests go through
	HalfOpen Breaker = "half-open" // a trial request decides whether it closes again
	Open     Breaker = "open"      // no request goes out; the machine claims none of the connector's jobs
)

// Window is how far back 429s count as recent: a connector with a 429 within it is throttled.
const Window = time.Minute

const (
	keepRateLimits = 64  // 429 times kept, enough to count a burst within Window
	keepErrors     = 5   // last errors kept
	maxErrorRunes  = 300 // an error's text is cut to this
)

// Error is one failed request.
type Error struct {
	At   time.Time
	Text string // secrets cut by the reporter, at most 300 characters
}

// State is a connector's throttle record at one moment. A State is never changed once
// published: a Recorder makes a new one on every event, so readers may keep it.
type State struct {
	// RateLimited are the times the API answered 429, oldest first (the last 64);
	// RateLimitedTotal counts them all since the machine started.
	RateLimited      []time.Time
	RateLimitedTotal uint64
	// RetryAfter is the wait the last 429 asked for (0: it gave none), at RetryAfterAt.
	RetryAfter   time.Duration
	RetryAfterAt time.Time
	// Breaker is the circuit breaker's state, since BreakerSince.
	Breaker      Breaker
	BreakerSince time.Time
	// Errors are the last failed requests, oldest first.
	Errors []Error
}

// RecentRateLimits counts the 429s within Window before now.
func (s State) RecentRateLimits(now time.Time) int {
	n := 0
	for _, t := range s.RateLimited {
		if now.Sub(t) < Window {
			n++
		}
	}
	return n
}

// Throttled says whether the API pushes back now: a 429 within Window, or a breaker that is
// not closed.
func (s State) Throttled(now time.Time) bool {
	return s.RecentRateLimits(now) > 0 || (s.Breaker != "" && s.Breaker != Closed)
}

// Why says in a few words why the connector is throttled ("" when it is not).
func (s State) Why(now time.Time) string {
	n := s.RecentRateLimits(now)
	switch {
	case s.Breaker == Open:
		return "breaker open"
	case s.Breaker == HalfOpen:
		return "breaker half-open"
	case n > 0:
		return fmt.Sprintf("%d × 429 in the last minute", n)
	}
	return ""
}

// Recorder keeps one connector's State. It is safe for concurrent use, and a nil Recorder
// records nothing (a connector built without one).
type Recorder struct {
	mu     sync.Mutex
	st     State
	notify func(State)
	now    func() time.Time
}

// New returns a recorder that calls notify (may be nil) with the new State after every event,
// in the order of the events.
func New(notify func(State)) *Recorder {
	return &Recorder{notify: notify, now: time.Now}
}

// State returns the current record.
func (r *Recorder) State() State {
	if r == nil {
		return State{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st
}

// change applies fn to a copy of the state, publishes the copy and tells notify.
func (r *Recorder) change(fn func(s *State, now time.Time)) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.st
	s.RateLimited, s.Errors = slices.Clone(s.RateLimited), slices.Clone(s.Errors)
	fn(&s, r.now())
	r.st = s
	if r.notify != nil {
		r.notify(s)
	}
}

// RateLimited records a 429; retryAfter is the wait it asked for (0: none given).
func (r *Recorder) RateLimited(retryAfter time.Duration) {
	r.change(func(s *State, now time.Time) {
		s.RateLimited = append(s.RateLimited, now)
		if len(s.RateLimited) > keepRateLimits {
			s.RateLimited = s.RateLimited[len(s.RateLimited)-keepRateLimits:]
		}
		s.RateLimitedTotal++
		s.RetryAfter, s.RetryAfterAt = retryAfter, now
	})
}

// BreakerChanged records the breaker's new state.
func (r *Recorder) BreakerChanged(to Breaker) {
	r.change(func(s *State, now time.Time) {
		if s.Breaker != to {
			s.Breaker, s.BreakerSince = to, now
		}
	})
}

// Failed records a failed request. text must already have its secrets cut; it is shortened to
// 300 characters.
func (r *Recorder) Failed(text string) {
	if utf8.RuneCountInString(text) > maxErrorRunes {
		text = string([]rune(text)[:maxErrorRunes]) + "…"
	}
	r.change(func(s *State, now time.Time) {
		s.Errors = append(s.Errors, Error{At: now, Text: text})
		if len(s.Errors) > keepErrors {
			s.Errors = s.Errors[len(s.Errors)-keepErrors:]
		}
	})
}
