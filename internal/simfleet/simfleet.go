// Package simfleet runs a fleet of machine cores in one process against a real Redis: each
// machine has its own Redis connections and subscriptions, the real broker, worker slots and
// wake-up code (broker.Watch, worker.Waker), and a simulated connector that sleeps for the job's
// duration. cmd/sim measures it; tests count the claims a job costs.
package simfleet

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/core/worker"
)

// Config describes a fleet.
type Config struct {
	Addr         string // the Redis server
	Machines     int
	Slots        int    // per machine; 0: 1
	Service      string // the job service every slot serves
	PollInterval time.Duration
	// JobTime is how long the simulated connector runs a job whose payload has no duration_ms.
	JobTime time.Duration
	// Caps, when set, adjusts machine i's capabilities (hardware, pool, ...).
	Caps func(i int, c *broker.Capabilities)
	// Endpoint, when set, is how machines reach Redis instead of Addr (e.g. through Sentinel).
	Endpoint *broker.Endpoint
	// Lease, when set, leases every claimed job for this long, and machine 0 runs the reaper
	// that re-queues jobs whose lease ran out (jobs shorter than the lease need no renewal).
	Lease time.Duration
}

// Fleet is a running fleet.
type Fleet struct {
	machines []*machine
	claims   atomic.Int64 // claim-script calls of every slot
	claimed  atomic.Int64 // calls that claimed a job
	stop     context.CancelFunc
	slots    sync.WaitGroup
	watches  sync.WaitGroup
}

type machine struct {
	rdb   *redis.Client
	waker *worker.Waker
}

// counting is the real broker, counting its claims.
type counting struct {
	*broker.Broker
	f *Fleet
}

func (c counting) Claim(ctx context.Context, caps []byte, scanLimit int, cursor int64) (*job.Job, int64, error) {
	c.f.claims.Add(1)
	j, next, err := c.Broker.Claim(ctx, caps, scanLimit, cursor)
	if j != nil {
		c.f.claimed.Add(1)
	}
	return j, next, err
}

// sleeper is the simulated connector: it sleeps for the payload's duration_ms, or JobTime.
type sleeper time.Duration

func (s sleeper) Run(ctx context.Context, j *job.Job, _ job.ProgressFunc) (job.Result, error) {
	var p struct {
		DurationMS float64 `json:"duration_ms"`
	}
	_ = json.Unmarshal(j.Payload, &p)
	d := time.Duration(s)
	if p.DurationMS > 0 {
		d = time.Duration(p.DurationMS * float64(time.Millisecond))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return job.Result{}, ctx.Err()
	case <-t.C:
	}
	return job.Result{Success: true, Data: map[string]any{"simulated": true}}, nil
}

// Start starts the fleet; Stop stops it.
func Start(cfg Config) (*Fleet, error) {
	if cfg.Slots <= 0 {
		cfg.Slots = 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Fleet{stop: cancel}
	for i := range cfg.Machines {
		// A real machine's connections: a small pool (claims and writes of its slots, the
		// blocking wait for wake tokens, the relay lease) and one subscription.
		rdb := redis.NewClient(&redis.Options{Addr: cfg.Addr, PoolSize: cfg.Slots + 3, MaxRetries: 3})
		if cfg.Endpoint != nil {
			var err error
			if rdb, err = broker.Dial(*cfg.Endpoint, cfg.Slots+3); err != nil {
				f.Stop()
				return nil, err
			}
		}
		b := broker.New(rdb)
		b.SetPolicy(broker.Policy{Lease: cfg.Lease})
		if cfg.Lease > 0 && i == 0 {
			f.watches.Go(func() { reaper(ctx, b) })
		}
		m := &machine{rdb: rdb, waker: worker.NewWaker()}
		f.machines = append(f.machines, m)
		machineID := fmt.Sprintf("sim-%04d", i)
		var ids []state.Slot
		for s := range cfg.Slots {
			ids = append(ids, state.Slot{ID: fmt.Sprintf("%s-worker-sim-%d", machineID, s), Connector: "sim"})
		}
		store := state.New(machineID, "", ids)
		if cfg.Caps != nil { // the machine's pool: its slots wait for the tokens of jobs that require it
			var probe broker.Capabilities
			cfg.Caps(i, &probe)
			b.SetRouting(broker.Routing{Pool: probe.Pool})
		}
		f.watches.Go(func() { b.Watch(ctx, slog.New(slog.DiscardHandler), m.waker, nil) })
		for _, s := range ids {
			c := broker.Capabilities{WorkerID: s.ID, MachineID: machineID, Services: []string{cfg.Service},
				Hardware: broker.Hardware{GPUCount: 1, GPUMemoryGB: 24, RAMGB: 64, CPUCores: 16}}
			if cfg.Caps != nil {
				cfg.Caps(i, &c)
			}
			caps, err := c.Encode()
			if err != nil {
				f.Stop()
				return nil, err
			}
			slot := worker.New(worker.Params{ID: s.ID, Connector: "sim", Caps: caps, Conn: sleeper(cfg.JobTime),
				Broker: counting{b, f}, Store: store, Wake: m.waker.Channel("sim", []string{cfg.Service}), Waker: m.waker,
				PollTicket:   func(ctx context.Context) bool { return b.PollTicket(ctx, caps, cfg.PollInterval) },
				PollInterval: cfg.PollInterval, ScanLimit: 1000, JobTimeout: time.Hour})
			f.slots.Go(func() { slot.Run(ctx, ctx) })
		}
	}
	return f, nil
}

// Settle waits until every slot waits for work (or ctx ends).
func (f *Fleet) Settle(ctx context.Context, slots int) error {
	for f.Waiting() < slots {
		select {
		case <-ctx.Done():
			return fmt.Errorf("only %d of %d slots wait for work: %w", f.Waiting(), slots, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// Waiting counts the slots that wait for work.
func (f *Fleet) Waiting() int {
	n := 0
	for _, m := range f.machines {
		n += m.waker.Waiting()
	}
	return n
}

// Claims returns the claim-script calls so far, and how many of them claimed a job.
func (f *Fleet) Claims() (calls, claimed int64) { return f.claims.Load(), f.claimed.Load() }

// Stop stops every machine and closes its connections.
func (f *Fleet) Stop() {
	f.stop()
	f.slots.Wait() // jobs in hand go back to the queue first
	for _, m := range f.machines {
		_ = m.rdb.Close() // ends blocking reads at once
	}
	f.watches.Wait()
}

// reaper re-queues jobs whose lease ran out, as the machine's recovery loop does.
func reaper(ctx context.Context, b *broker.Broker) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_, _, _ = b.Reap(ctx)
		}
	}
}
