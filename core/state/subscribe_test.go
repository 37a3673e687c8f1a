package state

import (
	"testing"
	"time"
)

func signalled(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A split subscription hears of readings and events on their own channels, and only the
// events the monitor must hear of at once move WorkersVersion.
func TestSubscribeSplitsReadingsFromEvents(t *testing.T) {
	s := New("box", "", []Slot{{ID: "box-0"}})
	all, stopAll := s.Subscribe()
	defer stopAll()
	events, readings, stop := s.SubscribeSplit()
	defer stop()

	_, w0 := s.Versions()
	s.SetTelemetry(Telemetry{At: time.Now()})
	s.SetQueueDepth(3)
	if !signalled(readings) || signalled(events) || !signalled(all) {
		t.Fatal("telemetry and the queue's depth are readings")
	}
	if _, w := s.Versions(); w != w0 {
		t.Errorf("readings moved WorkersVersion %d → %d", w0, w)
	}

	s.JobProgress("box-0", 50, "half")
	if !signalled(events) || signalled(readings) || !signalled(all) {
		t.Fatal("a job's progress is an event")
	}
	if _, w := s.Versions(); w != w0 {
		t.Errorf("a job's progress moved WorkersVersion %d → %d", w0, w)
	}

	s.SetTelemetry(Telemetry{At: time.Now(), Unhealthy: map[int]string{0: "XID 79"}})
	if !signalled(events) || signalled(readings) {
		t.Fatal("a GPU going out of service is an event")
	}
	if _, w := s.Versions(); w != w0+1 {
		t.Errorf("a GPU going out of service left WorkersVersion at %d, want %d", w, w0+1)
	}

	stop()
	s.SetPaused(true)
	if signalled(events) || !signalled(all) {
		t.Error("a stopped subscription was signalled, or the other one was not")
	}
}
