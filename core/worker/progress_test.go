package worker

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/job"
)

type sent struct {
	mu  sync.Mutex
	pct []float64
}

func (s *sent) send(p job.Progress) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pct = append(s.pct, p.Percent)
}

func (s *sent) get() []float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pct)
}

// With an interval no test outlives, what goes out does not depend on timing: the first
// report, the first above 0, milestones and the first 100; nothing else, and nothing after close.
func TestProgressGateNeverHoldsBackWhatClientsMustSee(t *testing.T) {
	for _, tc := range []struct {
		name    string
		reports []job.Progress
		want    []float64
	}{
		{"mock", []job.Progress{{Percent: 10, Milestone: true}, {Percent: 80, Milestone: true}, {Percent: 100, Milestone: true}}, []float64{10, 80, 100}},
		{"chatty", []job.Progress{{Percent: 1}, {Percent: 2}, {Percent: 3}, {Percent: 99}, {Percent: 100}, {Percent: 100}}, []float64{1, 100}},
		{"starts at 0", []job.Progress{{Percent: 0}, {Percent: 0}, {Percent: 5}, {Percent: 6}}, []float64{0, 5}},
		{"milestone between", []job.Progress{{Percent: 10}, {Percent: 20}, {Percent: 50, Milestone: true}, {Percent: 60}}, []float64{10, 50}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s sent
			g := newProgressGate(time.Hour, s.send)
			for _, p := range tc.reports {
				g.report(p)
			}
			g.close()
			g.report(job.Progress{Percent: 100, Milestone: true})
			if got := s.get(); !slices.Equal(got, tc.want) {
				t.Errorf("sent %v, want %v", got, tc.want)
			}
		})
	}
}

// A report held back goes out when its interval ends: the last state before a pause is not lost.
func TestProgressGateSendsTheHeldReportLater(t *testing.T) {
	var s sent
	g := newProgressGate(20*time.Millisecond, s.send)
	defer g.close()
	for _, pct := range []float64{10, 20, 30} {
		g.report(job.Progress{Percent: pct})
	}
	deadline := time.Now().Add(20 * time.Second)
	for got := s.get(); len(got) == 0 || got[len(got)-1] != 30; got = s.get() {
		if time.Now().After(deadline) {
			t.Fatalf("the last report (30) never went out: %v", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := s.get(); got[0] != 10 || !slices.IsSorted(got) {
		t.Errorf("sent %v, want 10 first, in order, ending with 30", got)
	}
}
