package worker

import (
	"sync"
	"time"

	"github.com/emp-job-queue/machine/core/job"
)

// progressGate decides which of a running job's progress reports reach the broker. Chatty
// connectors report many times a second; the broker gets one report per interval at most, but
// these always go out at once: the first report, the first above 0 % (the API relays no 0), the
// first that reaches 100 % (so clients see 100 before complete_job, as emp's do), and a
// connector's milestones (mock: 10/80/100). A report
// held back goes out when its interval ends, unless a newer one replaced it first or the job
// ended. The gate is safe for concurrent use; reports go out in the order they were made.
type progressGate struct {
	send  func(job.Progress) // writes one report to the broker; called with mu held
	every time.Duration

	mu      sync.Mutex
	last    time.Time // when the last report went out
	top     float64   // the highest percent that went out
	held    *job.Progress
	pending *time.Timer // sends held when the interval ends
	gen     uint64      // invalidates a timer that fired while a newer report went out
	closed  bool
}

func newProgressGate(every time.Duration, send func(job.Progress)) *progressGate {
	return &progressGate{send: send, every: every}
}

// report takes one report from the connector.
func (g *progressGate) report(p job.Progress) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	now := time.Now()
	wait := g.every - now.Sub(g.last)
	first := g.last.IsZero() || (p.Percent > 0 && g.top <= 0)
	if first || p.Milestone || (p.Percent >= 100 && g.top < 100) || wait <= 0 {
		g.emit(p, now)
		return
	}
	g.held = &p
	if g.pending == nil {
		gen := g.gen
		g.pending = time.AfterFunc(wait, func() { g.flush(gen) })
	}
}

// flush sends the report held back when its interval ended.
func (g *progressGate) flush(gen uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || gen != g.gen || g.held == nil {
		return
	}
	g.emit(*g.held, time.Now())
}

func (g *progressGate) emit(p job.Progress, now time.Time) {
	g.gen++
	if g.pending != nil {
		g.pending.Stop()
		g.pending = nil
	}
	g.held = nil
	g.last = now
	g.top = max(g.top, p.Percent)
	g.send(p)
}

// close ends the job's progress: a report held back is dropped (the outcome supersedes it) and
// nothing is sent afterwards. It waits for a report being sent, so no progress write can follow
// the job's outcome.
func (g *progressGate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	g.held = nil
	if g.pending != nil {
		g.pending.Stop()
		g.pending = nil
	}
}
