package supervisor

import (
	"fmt"
	"math"
	"time"
)

// Policy is how a service is restarted after it exits.
type Policy struct {
	Initial     time.Duration // first delay (1 s)
	Factor      float64       // growth per consecutive crash (1.5)
	Max         time.Duration // delay cap (60 s)
	StableAfter time.Duration // a run this long resets the count (60 s)
	MaxCrashes  int           // consecutive short runs before giving up (10)
}

// DefaultPolicy is the policy of every service unless its spec says otherwise.
var DefaultPolicy = Policy{Initial: time.Second, Factor: 1.5, Max: time.Minute, StableAfter: time.Minute, MaxCrashes: 10}

// Reasons a decision gives.
const (
	ReasonRestart   = "restart"    // exited; restarting after Delay
	ReasonCrashLoop = "crash loop" // too many short runs in a row: errored
)

// Decision is what to do after an exit.
type Decision struct {
	Restart     bool
	Delay       time.Duration
	Consecutive int // short runs in a row, this one included
	Reason      string
	Message     string // one sentence for the operator
}

// Decide is the restart decision, a pure function of the policy, how many short runs came
// before, when the run started and when it ended: no clock is read here.
func Decide(p Policy, consecutive int, started, exited time.Time, exit string) Decision {
	if exited.Sub(started) >= p.StableAfter {
		consecutive = 0
	}
	consecutive++
	if consecutive > p.MaxCrashes {
		return Decision{Consecutive: consecutive, Reason: ReasonCrashLoop, Message: fmt.Sprintf(
			"exited %d times in a row, each within %s of starting (last: %s); fix it, then restart it with POST /restart/service",
			consecutive, p.StableAfter, exit)}
	}
	delay := time.Duration(float64(p.Initial) * math.Pow(p.Factor, float64(consecutive-1)))
	if delay > p.Max || delay <= 0 {
		delay = p.Max
	}
	return Decision{Restart: true, Delay: delay, Consecutive: consecutive, Reason: ReasonRestart,
		Message: fmt.Sprintf("exited (%s); restarting in %s", exit, delay.Round(time.Millisecond))}
}
