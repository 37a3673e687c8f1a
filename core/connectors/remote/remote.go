// Package remote is what every connector to a paid remote API shares: a per-connector rate
// limit, retries with exponential backoff and jitter on 429, 5xx and network errors that
// honour Retry-After, a circuit breaker whose open state stops the machine claiming that
// connector's jobs (other machines take them), failure classification, and secrets kept out of
// every error.
package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"

	"github.com/emp-job-queue/machine/core/connectors/throttle"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/netguard"
)

// Options configure a Client.
type Options struct {
	Name          string        // connector name, for errors
	RatePerSecond float64       // requests a second (default 5)
	Burst         int           // default 5
	Timeout       time.Duration // one request (default 120 s)
	MaxTries      uint          // attempts of one request (default 4)
	BreakAfter    uint32        // consecutive failed requests that open the breaker (default 5)
	BreakFor      time.Duration // how long it stays open (default 30 s)
	Secrets       []string      // values never to show in an error (API keys)
	// Downloads bounds what Fetch may reach: the URLs it gets come from the API's answers or
	// the job, not from the operator, so they reach only public addresses unless the policy
	// allows more (requests to the API's own base URL are the operator's and are not bound).
	Downloads netguard.Policy
	// Observer hears how the API pushes back: 429s, the breaker's state, failed requests
	// (secrets cut). Nil: nobody listens.
	Observer Observer
}

// Observer is told how the API pushes back. *throttle.Recorder is the machine's.
type Observer interface {
	RateLimited(retryAfter time.Duration) // the API answered 429, asking for retryAfter (0: no Retry-After)
	BreakerChanged(to throttle.Breaker)   // the breaker changed state (and once, Closed, when the client is made)
	Failed(text string)                   // a request failed; text has the secrets cut
}

type noObserver struct{}

func (noObserver) RateLimited(time.Duration)       {}
func (noObserver) BreakerChanged(throttle.Breaker) {}
func (noObserver) Failed(string)                   {}

// Client sends requests to one remote API.
type Client struct {
	o       Options
	http    *http.Client // the API itself
	fetch   *http.Client // output files: every connection (redirects too) passes o.Downloads
	limiter *rate.Limiter
	breaker *gobreaker.CircuitBreaker[response]
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// New returns a client.
func New(o Options) *Client {
	if o.RatePerSecond <= 0 {
		o.RatePerSecond = 5
	}
	if o.Burst <= 0 {
		o.Burst = 5
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.MaxTries == 0 {
		o.MaxTries = 4
	}
	if o.BreakAfter == 0 {
		o.BreakAfter = 5
	}
	if o.BreakFor <= 0 {
		o.BreakFor = 30 * time.Second
	}
	if o.Observer == nil {
		o.Observer = noObserver{}
	}
	c := &Client{o: o, http: &http.Client{Timeout: o.Timeout}, fetch: &http.Client{Timeout: o.Timeout, Transport: o.Downloads.Transport()}, limiter: rate.NewLimiter(rate.Limit(o.RatePerSecond), o.Burst)}
	c.breaker = gobreaker.NewCircuitBreaker[response](gobreaker.Settings{
		Name: o.Name, Timeout: o.BreakFor,
		ReadyToTrip: func(n gobreaker.Counts) bool { return n.ConsecutiveFailures >= o.BreakAfter },
		// A request the API refused for good (bad input, bad key) says nothing about its health.
		IsSuccessful:  func(err error) bool { return err == nil || job.IsPermanent(err) },
		OnStateChange: func(_ string, _, to gobreaker.State) { o.Observer.BreakerChanged(breakerState(to)) },
	})
	o.Observer.BreakerChanged(throttle.Closed)
	return c
}

// breakerState is gobreaker's state as the throttle record names it.
func breakerState(s gobreaker.State) throttle.Breaker {
	switch s {
	case gobreaker.StateOpen:
		return throttle.Open
	case gobreaker.StateHalfOpen:
		return throttle.HalfOpen
	}
	return throttle.Closed
}

// Available is false while the breaker is open: the machine then claims none of this
// connector's jobs, so other machines take them.
func (c *Client) Available() bool { return c.breaker.State() != gobreaker.StateOpen }

// ErrUnavailable says the breaker is open.
var ErrUnavailable = errors.New("the remote API failed repeatedly; not calling it for a while")

// Do sends the request newReq builds (it is called again for each attempt) and returns the
// status and body of a 2xx answer. 429, 5xx and network errors are retried with backoff
// (Retry-After wins when given); other 4xx are permanent errors carrying the API's message.
func (c *Client) Do(ctx context.Context, newReq func(ctx context.Context) (*http.Request, error)) (int, []byte, error) {
	return c.do(ctx, c.http, newReq)
}

func (c *Client) do(ctx context.Context, client *http.Client, newReq func(ctx context.Context) (*http.Request, error)) (int, []byte, error) {
	op := func() (response, error) {
		if err := c.limiter.Wait(ctx); err != nil {
			return response{}, backoff.Permanent(err)
		}
		r, err := c.breaker.Execute(func() (response, error) { return c.once(ctx, client, newReq) })
		if err != nil && ctx.Err() == nil && !errors.Is(err, gobreaker.ErrOpenState) && !errors.Is(err, gobreaker.ErrTooManyRequests) {
			c.o.Observer.Failed(c.redact(err).Error())
		}
		switch {
		case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
			return r, backoff.Permanent(fmt.Errorf("%s: %w", c.o.Name, ErrUnavailable))
		case job.IsPermanent(err):
			return r, backoff.Permanent(err)
		case err != nil && r.status == http.StatusTooManyRequests:
			if secs, perr := strconv.Atoi(r.header.Get("Retry-After")); perr == nil && secs >= 0 {
				return r, backoff.RetryAfter(secs)
			}
		}
		return r, err
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = 200*time.Millisecond, 10*time.Second
	r, err := backoff.Retry(ctx, op, backoff.WithBackOff(b), backoff.WithMaxTries(c.o.MaxTries), backoff.WithMaxElapsedTime(c.o.Timeout*2))
	if err != nil {
		return r.status, nil, c.redact(err)
	}
	return r.status, r.body, nil
}

func (c *Client) once(ctx context.Context, client *http.Client, newReq func(ctx context.Context) (*http.Request, error)) (response, error) {
	req, err := newReq(ctx)
	if err != nil {
		return response{}, job.Permanent(err)
	}
	resp, err := client.Do(req)
	if re, refused := netguard.IsRefused(err); refused {
		return response{}, job.Permanent(re) // retrying reaches the same address
	}
	if err != nil {
		return response{}, fmt.Errorf("%s: %w", c.o.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	r := response{status: resp.StatusCode, header: resp.Header, body: body}
	if resp.StatusCode == http.StatusTooManyRequests {
		c.o.Observer.RateLimited(retryAfter(resp.Header.Get("Retry-After"), time.Now()))
	}
	switch {
	case err != nil:
		return r, fmt.Errorf("%s: reading the answer: %w", c.o.Name, err)
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return r, fmt.Errorf("%s answered %s: %s", c.o.Name, resp.Status, snippet(body))
	case resp.StatusCode >= 400:
		return r, job.Permanent(fmt.Errorf("%s refused the request (%s): %s", c.o.Name, resp.Status, snippet(body)))
	}
	return r, nil
}

// retryAfter is a Retry-After header's wait: seconds or an HTTP date (0: none or unreadable).
func retryAfter(h string, now time.Time) time.Duration {
	if secs, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// redact removes secrets from an error's text. The chain stays: errors.Is(err, ErrUnavailable)
// and job.IsPermanent still see through it.
func (c *Client) redact(err error) error {
	msg := err.Error()
	for _, s := range c.o.Secrets {
		if len(s) >= 6 {
			msg = strings.ReplaceAll(msg, s, "***")
			msg = strings.ReplaceAll(msg, s[:len(s)/2], "***") // APIs echo key prefixes
		}
	}
	if msg == err.Error() {
		return err
	}
	return &redacted{msg: msg, cause: err}
}

// redacted is an error whose text had secrets cut out.
type redacted struct {
	msg   string
	cause error
}

func (r *redacted) Error() string { return r.msg }
func (r *redacted) Unwrap() error { return r.cause }

// JSON sends a JSON request with a bearer token and decodes a JSON answer into out (nil: the
// answer is not read). A 2xx answer that is not JSON is an error that says so.
func (c *Client) JSON(ctx context.Context, method, url, token string, body, out any) error {
	var raw []byte
	if body != nil {
		raw, _ = json.Marshal(body)
	}
	_, resp, err := c.Do(ctx, func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		return req, nil
	})
	if err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(resp, out); err != nil {
			return fmt.Errorf("%s answered %s with malformed JSON (%v)", c.o.Name, method, err)
		}
	}
	return nil
}

// Poll calls check every interval until it reports done, fails, ctx ends or max passes.
func Poll(ctx context.Context, every, max time.Duration, check func(ctx context.Context) (done bool, err error)) error {
	deadline := time.Now().Add(max)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
		done, err := check(ctx)
		if err != nil || done {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still not done after %s", max)
		}
	}
}

// Fetch downloads an output file (through the rate limit, retries and breaker), refusing,
// for good, an address Options.Downloads closes, whether named or reached by a redirect.
func (c *Client) Fetch(ctx context.Context, url string) ([]byte, error) {
	_, body, err := c.do(ctx, c.fetch, func(ctx context.Context) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	})
	return body, err
}
