package simfleet_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/internal/redistest"
	"github.com/emp-job-queue/machine/internal/simfleet"
)

const machines = 30

func startFleet(t *testing.T, srv *redistest.Server, poll time.Duration, caps func(int, *broker.Capabilities)) *simfleet.Fleet {
	t.Helper()
	f, err := simfleet.Start(simfleet.Config{Addr: srv.Addr, Machines: machines, Service: "sim",
		PollInterval: poll, JobTime: time.Millisecond, Caps: caps})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.Settle(ctx, machines); err != nil {
		t.Fatal(err)
	}
	return f
}

// waitStatus waits until the job reaches a final status (it never times anything).
func waitStatus(t *testing.T, b *broker.Broker, id string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := b.Client().HGet(context.Background(), "job:"+id, "status").Val()
		if st == "completed" || st == "failed" {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s never finished (status %q)", id, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// One job wakes one machine of an idle fleet, not all of them: its pickup costs at most 3 claim
// scripts however many machines wait (every machine ran one when it started).
func TestOneJobWakesOneMachine(t *testing.T) {
	srv := redistest.Start(t)
	f := startFleet(t, srv, time.Hour, nil)
	b := broker.New(srv.Client())
	waitRelays(t, b)
	before, _ := f.Claims()
	id, err := b.Submit(context.Background(), broker.JobSpec{Service: "sim", Payload: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	if st := waitStatus(t, b, id); st != "completed" {
		t.Fatalf("job %s", st)
	}
	// The slot that ran the job claims once more before it waits again.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.Settle(ctx, machines); err != nil {
		t.Fatal(err)
	}
	after, claimed := f.Claims()
	if calls := after - before; calls > 3 || claimed != 1 {
		t.Fatalf("one job among %d idle machines cost %d claim scripts (%d claimed a job), want at most 3 and 1", machines, calls, claimed)
	}
}

// A wake token spent on machines that cannot take the job does not lose it: the one machine
// that matches claims it on its poll, although its poll is one in turn among its kind.
func TestAJobOnlyOneMachineMatchesIsNotLost(t *testing.T) {
	srv := redistest.Start(t)
	f := startFleet(t, srv, 100*time.Millisecond, func(i int, c *broker.Capabilities) {
		if i == machines-1 {
			c.Hardware.GPUMemoryGB = 80
		}
	})
	b := broker.New(srv.Client())
	waitRelays(t, b)
	for range 3 {
		id, err := b.Submit(context.Background(), broker.JobSpec{Service: "sim", Payload: json.RawMessage(`{}`),
			Requirements: json.RawMessage(`{"hardware":{"gpu_memory_gb":48}}`)})
		if err != nil {
			t.Fatal(err)
		}
		if st := waitStatus(t, b, id); st != "completed" {
			t.Fatalf("job %s", st)
		}
		if w := b.Client().HGet(context.Background(), "job:"+id, "worker_id").Val(); w != "sim-0029-worker-sim-0" {
			t.Fatalf("job ran on %q", w)
		}
	}
	_ = f
}

// A job that requires a pool wakes a machine of that pool, never one whose claim cannot take
// it: with polls an hour apart, the one fast machine among heavy ones claims the job from its
// wake token alone, and the job costs at most 3 claim scripts.
func TestAJobThatRequiresAPoolWakesThatPool(t *testing.T) {
	srv := redistest.Start(t)
	f := startFleet(t, srv, time.Hour, func(i int, c *broker.Capabilities) {
		c.Pool = "heavy"
		if i == machines-1 {
			c.Pool = "fast"
		}
	})
	b := broker.New(srv.Client())
	waitRelays(t, b)
	for range 3 {
		before, _ := f.Claims()
		id, err := b.Submit(context.Background(), broker.JobSpec{Service: "sim", Payload: json.RawMessage(`{}`),
			Requirements: json.RawMessage(`{"pool":"fast"}`)})
		if err != nil {
			t.Fatal(err)
		}
		if st := waitStatus(t, b, id); st != "completed" {
			t.Fatalf("job %s", st)
		}
		if w := b.Client().HGet(context.Background(), "job:"+id, "worker_id").Val(); w != "sim-0029-worker-sim-0" {
			t.Fatalf("job ran on %q", w)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = f.Settle(ctx, machines)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if after, _ := f.Claims(); after-before > 3 {
			t.Fatalf("a fast job among %d idle machines cost %d claim scripts, want at most 3", machines, after-before)
		}
	}
}

func waitRelays(t *testing.T, b *broker.Broker) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := b.Client().PubSubNumSub(context.Background(), broker.ChanSubmitted).Val()[broker.ChanSubmitted]
		if n >= broker.RelayCount {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d relays subscribed to job_submitted, want %d", n, broker.RelayCount)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
