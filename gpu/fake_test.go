package gpu_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/gpu"
)

func TestFakeIsDeterministicAndFollowsLoad(t *testing.T) {
	a, b := gpu.NewFake(2, "Sim", 24), gpu.NewFake(2, "Sim", 24)
	busy := func() map[int]float64 { return map[int]float64{1: 1} }
	a.SetActivity(busy)
	b.SetActivity(busy)
	at := time.Unix(1000, 0)
	clock := func() time.Time { return at }
	a.SetClock(clock)
	b.SetClock(clock)
	for range 5 {
		at = at.Add(time.Second)
		ra, _ := a.Read(context.Background())
		rb, _ := b.Read(context.Background())
		if !reflect.DeepEqual(ra, rb) {
			t.Fatalf("two fakes with the same load differ:\n%+v\n%+v", ra, rb)
		}
		idle, work := ra[0], ra[1]
		if work.UtilGPU < 70 || idle.UtilGPU > 5 || work.MemoryUsedMB <= idle.MemoryUsedMB || work.PowerW <= idle.PowerW || work.PState != 0 {
			t.Fatalf("load not reflected: idle %+v busy %+v", idle, work)
		}
	}
	s := gpu.Summarize(a)
	if s.Count != 2 || s.Model != "Sim" || s.MemoryGB != 24 || s.Source != "fake" {
		t.Errorf("summary = %+v", s)
	}
}

// The fake's power and memory are functions of the activity, and its energy counter is their
// exact integral over its clock: what lets accounting tests compute the figures a job is owed.
func TestFakeCurvesAndEnergyCounter(t *testing.T) {
	f := gpu.NewFake(2, "Sim", 24)
	activity := 0.0
	f.SetActivity(func() map[int]float64 { return map[int]float64{0: activity} })
	at := time.Unix(5000, 0)
	f.SetClock(func() time.Time { return at })
	read := func() gpu.Reading {
		rs, err := f.Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return rs[0]
	}
	first := read()
	if first.EnergyMJ != gpu.FakeEnergyBaseMJ || first.PowerW != gpu.FakePowerW(0) || first.MemoryUsedMB != gpu.FakeMemoryUsedMB(24*1024, 0) {
		t.Fatalf("first reading %+v", first)
	}
	activity = 1
	at = at.Add(1500 * time.Millisecond)
	busy := read()
	if busy.PowerW != 300 || busy.MemoryUsedMB != gpu.FakeMemoryUsedMB(24*1024, 1) || busy.MemoryUsedMB <= first.MemoryUsedMB {
		t.Fatalf("busy reading %+v", busy)
	}
	// The counter advanced at this reading's power for the 1.5 s since the last one.
	if got, want := busy.EnergyMJ-first.EnergyMJ, 300*1.5*1000; got != want {
		t.Errorf("energy counter advanced %v mJ, want %v", got, want)
	}
	f.SetEnergyCounter(false)
	at = at.Add(time.Second)
	if r := read(); !gpu.IsNA(r.EnergyMJ) || r.PowerW != 300 {
		t.Errorf("a GPU without a counter must read n/a energy, not a number: %+v", r)
	}
}

func TestSamplerHistoryAndHealth(t *testing.T) {
	f := gpu.NewFake(2, "", 0)
	var healthEvents []gpu.HealthEvent
	var samples int
	s := gpu.NewSampler(gpu.SamplerParams{Source: f, Interval: 5 * time.Millisecond, History: 10,
		Host:     gpu.NewHost(t.TempDir()),
		OnSample: func(gpu.Snapshot) { samples++ },
		OnHealth: func(ev gpu.HealthEvent) { healthEvents = append(healthEvents, ev) }})
	for range 15 {
		s.Sample(context.Background())
	}
	h := s.History(1, gpu.Utilization)
	if len(h) != 10 {
		t.Fatalf("history holds %d values, want the last 10", len(h))
	}
	// The ring is oldest first: the fake's 6th..15th readings of GPU 1.
	ref := gpu.NewFake(2, "", 0)
	var want []float64
	for i := range 15 {
		r, _ := ref.Read(context.Background())
		if i >= 5 {
			want = append(want, r[1].UtilGPU)
		}
	}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("history %v, want %v", h, want)
	}
	if samples != 15 {
		t.Errorf("OnSample ran %d times", samples)
	}
	latest := s.Latest()
	if latest.Host.MemTotalMB <= 0 || latest.Host.DiskTotalGB <= 0 || latest.Host.CPUCores < 1 {
		t.Errorf("host metrics missing: %+v", latest.Host)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	f.Fail(1, "XID 79 critical error")
	deadline := time.Now().Add(5 * time.Second)
	for s.Healthy(1) {
		if time.Now().After(deadline) {
			t.Fatal("GPU 1 never marked unhealthy")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if !s.Healthy(0) || len(healthEvents) != 1 || healthEvents[0].Reason != "XID 79 critical error" {
		t.Errorf("health: gpu0 %v, events %+v", s.Healthy(0), healthEvents)
	}
	if got := s.Sample(context.Background()).Unhealthy[1]; got != "XID 79 critical error" {
		t.Errorf("snapshot unhealthy = %q", got)
	}
}

func TestOpenModes(t *testing.T) {
	src, note, err := gpu.Open(gpu.ModeMock, gpu.FakeSpec{Count: 3})
	if err != nil || src.Name() != "fake" || len(src.Devices()) != 3 || note == "" {
		t.Fatalf("mock: %v %q %v", src, note, err)
	}
	// auto: NVML where a driver answers (a GPU host), else the fake with a reason; actual
	// refuses to fall back.
	src, note, err = gpu.Open(gpu.ModeAuto, gpu.FakeSpec{Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	actual, _, actualErr := gpu.Open(gpu.ModeActual, gpu.FakeSpec{})
	switch src.Name() {
	case "nvml":
		if actualErr != nil || len(actual.Devices()) == 0 {
			t.Errorf("a driver answered in auto mode but not in actual mode: %v", actualErr)
		}
	case "fake":
		if note == "" || actualErr == nil {
			t.Errorf("without a driver: auto note %q, actual error %v", note, actualErr)
		}
	default:
		t.Errorf("auto picked %q", src.Name())
	}
	if _, _, err := gpu.Open("sometimes", gpu.FakeSpec{}); err == nil {
		t.Error("an unknown GPU_MODE was accepted")
	}
}

// A health watch that keeps failing is retried, and after a few failures in a row every GPU is
// out of service, saying why: health watching never stops silently.
func TestBrokenHealthWatchTakesGPUsOutOfService(t *testing.T) {
	f := gpu.NewFake(2, "", 0)
	f.FailWatch(errors.New("event set broke"), 3)
	s := gpu.NewSampler(gpu.SamplerParams{Source: f, Interval: time.Hour, HealthRetry: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for s.Healthy(0) || s.Healthy(1) {
		if time.Now().After(deadline) {
			t.Fatal("the GPUs stayed in service while their health could not be watched")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := s.Sample(context.Background()).Unhealthy[0]; !strings.Contains(got, "event set broke") {
		t.Errorf("reason = %q", got)
	}
}
