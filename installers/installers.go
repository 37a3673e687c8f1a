// Package installers installs what the machine's services need before they start: ComfyUI with
// its custom nodes and models, the browser. An install is a list of idempotent steps run in
// stages, with bounded parallelism inside a stage, progress events, an overall timeout, a
// marker per finished step so a second boot skips it, and a shared download cache.
//
// A step marked Optional (one custom node, one model) fails alone: the others go on and the
// failures are reported together at the end, unless Strict is set.
package installers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Step is one idempotent piece of an install.
type Step struct {
	Name string
	// Marker identifies what the step installs (for example a repository URL and commit);
	// when its marker exists the step is skipped. Empty: the step always runs.
	Marker string
	// MarkerOf computes the marker when the step is reached, for markers that depend on what
	// earlier steps installed (a requirements file's content). It wins over Marker.
	MarkerOf func() string
	Optional bool // its failure fails only this item (unless Strict)
	Run      func(ctx context.Context, progress func(done, total int64)) error
}

// Phase is what happened to a step.
type Phase string

const (
	Started  Phase = "started"
	Progress Phase = "progress"
	Done     Phase = "done"
	Skipped  Phase = "skipped" // its marker says it is installed
	Failed   Phase = "failed"
)

// Event reports a step's progress, for logs and the console.
type Event struct {
	Step        string
	Phase       Phase
	Done, Total int64 // bytes or units, when the step knows them
	Err         error
	At          time.Time
}

// Runner runs install stages.
type Runner struct {
	MarkerDir string
	Parallel  int           // steps of one stage at a time; default 4
	Timeout   time.Duration // the whole install (SERVICE_INSTALL_TIMEOUT); 0: none
	Strict    bool          // any failure fails the install
	OnEvent   func(Event)
	Log       *slog.Logger
}

// StepError lists the steps that failed.
type StepError struct{ Failures map[string]error }

func (e *StepError) Error() string {
	var parts []string
	for name, err := range e.Failures {
		parts = append(parts, fmt.Sprintf("%s: %v", name, err))
	}
	return fmt.Sprintf("%d install step(s) failed: %s", len(parts), strings.Join(parts, "; "))
}

// Run runs the stages in order, each stage's steps in parallel. A required step's failure
// stops the install after its stage; optional failures are collected and returned together.
func (r *Runner) Run(ctx context.Context, stages ...[]Step) error {
	if r.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.Timeout)
		defer cancel()
	}
	if r.MarkerDir != "" {
		if err := os.MkdirAll(r.MarkerDir, 0o755); err != nil {
			return fmt.Errorf("create install marker directory: %w", err)
		}
	}
	failed := &StepError{Failures: map[string]error{}}
	for _, stage := range stages {
		required := r.stage(ctx, stage, failed)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("install did not finish within SERVICE_INSTALL_TIMEOUT (%s); raise it or check the network and the failing step: %w", r.Timeout, failed)
		}
		if required || (r.Strict && len(failed.Failures) > 0) {
			return failed
		}
	}
	if len(failed.Failures) > 0 {
		return failed
	}
	return nil
}

func (r *Runner) stage(ctx context.Context, steps []Step, failed *StepError) (requiredFailed bool) {
	parallel := r.Parallel
	if parallel <= 0 {
		parallel = 4
	}
	sem := make(chan struct{}, parallel)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, st := range steps {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				mu.Lock()
				failed.Failures[st.Name] = ctx.Err()
				requiredFailed = requiredFailed || !st.Optional
				mu.Unlock()
				return
			}
			defer func() { <-sem }()
			if err := r.step(ctx, st); err != nil {
				mu.Lock()
				failed.Failures[st.Name] = err
				requiredFailed = requiredFailed || !st.Optional
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return requiredFailed
}

func (r *Runner) markerPath(marker string) string {
	sum := sha256.Sum256([]byte(marker))
	return filepath.Join(r.MarkerDir, hex.EncodeToString(sum[:12])+".done")
}

func (r *Runner) emit(ev Event) {
	ev.At = time.Now()
	if r.OnEvent != nil {
		r.OnEvent(ev)
	}
	if r.Log != nil {
		switch ev.Phase {
		case Failed:
			r.Log.Error("install step failed", "step", ev.Step, "err", ev.Err)
		case Done, Skipped, Started:
			r.Log.Info("install step "+string(ev.Phase), "step", ev.Step)
		}
	}
}

func (r *Runner) step(ctx context.Context, st Step) error {
	if st.MarkerOf != nil {
		st.Marker = st.MarkerOf()
	}
	if st.Marker != "" && r.MarkerDir != "" {
		if _, err := os.Stat(r.markerPath(st.Marker)); err == nil {
			r.emit(Event{Step: st.Name, Phase: Skipped})
			return nil
		}
	}
	r.emit(Event{Step: st.Name, Phase: Started})
	err := st.Run(ctx, func(done, total int64) {
		r.emit(Event{Step: st.Name, Phase: Progress, Done: done, Total: total})
	})
	if err != nil {
		r.emit(Event{Step: st.Name, Phase: Failed, Err: err})
		return err
	}
	if st.Marker != "" && r.MarkerDir != "" {
		if err := os.WriteFile(r.markerPath(st.Marker), []byte(Redact(st.Marker)+"\n"), 0o644); err != nil {
			return fmt.Errorf("record %s as installed: %w", st.Name, err)
		}
	}
	r.emit(Event{Step: st.Name, Phase: Done})
	return nil
}
