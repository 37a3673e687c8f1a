package installers_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/installers"
)

func TestParallelismIsBounded(t *testing.T) {
	var running, peak atomic.Int32
	var steps []installers.Step
	for range 12 {
		steps = append(steps, installers.Step{Name: "s" + string(rune('a'+len(steps))), Run: func(context.Context, func(int64, int64)) error {
			n := running.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(20 * time.Millisecond)
			running.Add(-1)
			return nil
		}})
	}
	r := &installers.Runner{Parallel: 3}
	if err := r.Run(context.Background(), steps); err != nil {
		t.Fatal(err)
	}
	if peak.Load() != 3 {
		t.Errorf("peak parallelism %d, want 3", peak.Load())
	}
}

func TestOverallTimeout(t *testing.T) {
	r := &installers.Runner{Timeout: 50 * time.Millisecond}
	err := r.Run(context.Background(), []installers.Step{{Name: "slow download", Run: func(ctx context.Context, _ func(int64, int64)) error {
		<-ctx.Done()
		return ctx.Err()
	}}}, []installers.Step{{Name: "never reached", Run: func(context.Context, func(int64, int64)) error {
		t.Error("a stage after the timeout ran")
		return nil
	}}})
	if err == nil || !strings.Contains(err.Error(), "SERVICE_INSTALL_TIMEOUT") || !strings.Contains(err.Error(), "slow download") {
		t.Fatalf("err = %v", err)
	}
}

func TestRequiredFailureStopsLaterStages(t *testing.T) {
	r := &installers.Runner{}
	err := r.Run(context.Background(), []installers.Step{{Name: "clone", Run: func(context.Context, func(int64, int64)) error {
		return context.DeadlineExceeded
	}}}, []installers.Step{{Name: "venv", Run: func(context.Context, func(int64, int64)) error {
		t.Error("ran after a required step failed")
		return nil
	}}})
	if err == nil || !strings.Contains(err.Error(), "clone") {
		t.Fatalf("err = %v", err)
	}
}
