package simulation_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/connectors/simulation"
	"github.com/emp-job-queue/machine/core/job"
)

func run(t testing.TB, payload string, retry int) (job.Result, []job.Progress, error) {
	t.Helper()
	c := simulation.New(simulation.Settings{Duration: 10 * time.Millisecond, Steps: 2})
	j := &job.Job{ID: "sim-1", Service: "simulation", Payload: json.RawMessage(payload), RetryCount: retry}
	var got []job.Progress
	res, err := c.Run(context.Background(), j, func(p job.Progress) { got = append(got, p) })
	return res, got, err
}

func TestStepsAndResult(t *testing.T) {
	res, progress, err := run(t, `{"steps":4,"duration_ms":8}`, 0)
	if err != nil || !res.Success {
		t.Fatalf("run = %+v, %v", res, err)
	}
	if len(progress) != 4 || progress[3].Percent != 100 || progress[1].Step != 2 || progress[1].TotalSteps != 4 {
		t.Fatalf("progress = %+v", progress)
	}
	if d := res.Data.(map[string]any); d["steps"] != 4 || d["simulated"] != true {
		t.Errorf("data = %v", d)
	}
}

func TestFailures(t *testing.T) {
	if _, _, err := run(t, `{"fail":true}`, 0); !errors.Is(err, simulation.ErrSimulatedFailure) || job.IsPermanent(err) {
		t.Errorf("fail: %v (permanent %v)", err, job.IsPermanent(err))
	}
	if _, _, err := run(t, `{"fail_permanently":true}`, 0); !job.IsPermanent(err) {
		t.Errorf("fail_permanently: %v", err)
	}
	if _, _, err := run(t, `{"failure_rate":1}`, 0); !errors.Is(err, simulation.ErrSimulatedFailure) {
		t.Errorf("failure_rate 1: %v", err)
	}
	for _, bad := range []string{`{"steps":0}`, `{"failure_rate":2}`, `{"steps":"x"}`, `[1,2]`, `{"model_load_ms":-1}`} {
		if _, _, err := run(t, bad, 0); !job.IsPermanent(err) {
			t.Errorf("payload %s: %v, want a permanent error", bad, err)
		}
	}
}

// A failure rate draws per job and attempt: reproducible, and a retry draws again.
func TestFailureRateIsDeterministic(t *testing.T) {
	fails := 0
	for retry := range 200 {
		_, _, err1 := run(t, `{"failure_rate":0.5,"duration_ms":0}`, retry)
		_, _, err2 := run(t, `{"failure_rate":0.5,"duration_ms":0}`, retry)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("attempt %d drew differently on two runs", retry)
		}
		if err1 != nil {
			fails++
		}
	}
	if fails < 60 || fails > 140 {
		t.Errorf("%d of 200 attempts failed at rate 0.5", fails)
	}
}

func TestCancellation(t *testing.T) {
	c := simulation.New(simulation.Settings{Duration: time.Hour, Steps: 10})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Run(ctx, &job.Job{ID: "x"}, func(job.Progress) {})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled run = %v", err)
	}
}

// phases records the phases a connector marks.
type phases struct{ events []string }

func (p *phases) BeginPhase(ph job.Phase) func() {
	p.events = append(p.events, fmt.Sprintf("begin %d", ph))
	return func() { p.events = append(p.events, fmt.Sprintf("end %d", ph)) }
}

// A simulated model load is marked as the job's preparation, so its resource record counts it
// as prepare_ms rather than run time.
func TestModelLoadIsPreparation(t *testing.T) {
	c := simulation.New(simulation.Settings{Duration: time.Millisecond, Steps: 1})
	rec := &phases{}
	var progress []job.Progress
	ctx := job.WithPhaseTimer(context.Background(), rec)
	j := &job.Job{ID: "sim-2", Service: "simulation", Payload: json.RawMessage(`{"model_load_ms":5}`)}
	if _, err := c.Run(ctx, j, func(p job.Progress) { progress = append(progress, p) }); err != nil {
		t.Fatal(err)
	}
	want := []string{fmt.Sprintf("begin %d", job.PhasePrepare), fmt.Sprintf("end %d", job.PhasePrepare)}
	if !slices.Equal(rec.events, want) || progress[0].Message != "loading model" {
		t.Errorf("phases %v, first progress %+v; want the load marked as preparation", rec.events, progress[0])
	}
}
