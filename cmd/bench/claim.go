package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/job"
)

// claimBudget is WORKER_CLAIM_SCAN_LIMIT's default: the work one claim call may do.
const claimBudget = 500

// claimBench measures what a claim costs behind jobs this worker cannot take: the time to
// claim behind 10,000 jobs for another service, and the Redis time of the claim script behind
// 10,000 jobs of its own service that no worker matches, each next to an empty queue.
func claimBench(ctx context.Context, b *broker.Broker, rdb *redis.Client) ([]row, error) {
	fmt.Fprintln(os.Stderr, "claim with 10,000 unrelated pending jobs ahead …")
	empty, full, behind, err := claimBehind(ctx, b, rdb, 10000)
	if err != nil {
		return nil, err
	}
	rows := []row{{"claim with 10,000 unrelated jobs ahead (p50, all calls)", ms(percentile(full, 0.5)),
		ms(percentile(empty, 0.5)) + " (empty queue)", fmt.Sprintf("×%.1f", ratio(full, empty)), "≤ 5 ms"},
		{"claim with 10,000 unrelated jobs ahead (p99, all calls)", ms(percentile(full, 0.99)), ms(percentile(empty, 0.99)) + " (empty queue)",
			fmt.Sprintf("%.3f ms Redis a call, %.1f calls", behind.usecPerCall/1000, float64(behind.calls)/float64(len(full))), ""}}

	fmt.Fprintln(os.Stderr, "claim script Redis time with 10,000 unmatchable same-service jobs ahead …")
	c, err := claimCost(ctx, b, rdb, 10000)
	if err != nil {
		return nil, err
	}
	usec := func(s scriptStat) string { return fmt.Sprintf("%.3f ms", s.usecPerCall/1000) }
	rows = append(rows,
		row{"claim script Redis time a call, 10,000 unmatchable same-service jobs ahead", usec(c.warm),
			usec(c.empty) + " (empty queue)", fmt.Sprintf("×%.1f", c.warm.usecPerCall/max(c.empty.usecPerCall, 1)), "≤ 2 ms"},
		row{"  calls (and Redis time) to claim the job behind them", fmt.Sprintf("%.1f calls, %.1f ms", c.warmCalls, c.warmCalls*c.warm.usecPerCall/1000),
			fmt.Sprintf("first pass: %d calls, %s a call", c.coldCalls, usec(c.cold)), "", ""})
	return rows, nil
}

// claimUntil claims as a slot does: again at once while the scan stopped on its work budget
// (a non-zero cursor), until a job is claimed or the whole queue was looked at.
func claimUntil(ctx context.Context, b *broker.Broker, caps []byte) (*job.Job, int, error) {
	var cursor int64
	for calls := 1; calls <= 100000; calls++ {
		j, next, err := b.Claim(ctx, caps, claimBudget, cursor)
		if err != nil || j != nil || next == 0 {
			return j, calls, err
		}
		cursor = next
	}
	return nil, 100000, fmt.Errorf("claim never finished its scan")
}

// claimBehind times claims (all the calls one takes) with an empty queue, then with `ahead`
// higher-priority jobs for a service this worker does not serve in front of its job, and
// returns the claim script's Redis time behind them.
func claimBehind(ctx context.Context, b *broker.Broker, rdb *redis.Client, ahead int) (empty, full []time.Duration, behind scriptStat, err error) {
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		return nil, nil, behind, err
	}
	caps, _ := broker.Capabilities{WorkerID: "bench-worker-mock-0", Services: []string{"mock"}}.Encode()
	measure := func(n int) ([]time.Duration, error) {
		var out []time.Duration
		for range n {
			if _, err := b.Submit(ctx, broker.JobSpec{Service: "mock", Priority: 10}); err != nil {
				return nil, err
			}
			t0 := time.Now()
			j, _, err := claimUntil(ctx, b, caps)
			d := time.Since(t0)
			if err != nil || j == nil {
				return nil, fmt.Errorf("claim behind the queue: job %v, %v", j, err)
			}
			out = append(out, d)
		}
		return out, nil
	}
	if empty, err = measure(50); err != nil {
		return nil, nil, behind, err
	}
	pipe := rdb.Pipeline()
	for k := range ahead {
		id := fmt.Sprintf("other-%d", k)
		pipe.HSet(ctx, broker.JobKey(id), "id", id, "service_required", "comfyui", "priority", "90", "payload", "{}", "status", "pending")
		pipe.ZAdd(ctx, broker.KeyPending, redis.Z{Score: float64(90e15 - k), Member: id})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, nil, behind, err
	}
	if _, err := measure(1); err != nil { // the first pass reads every job's service
		return nil, nil, behind, err
	}
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		return nil, nil, behind, err
	}
	if full, err = measure(50); err != nil {
		return nil, nil, behind, err
	}
	behind, err = evalshaStat(ctx, rdb)
	return empty, full, behind, err
}

// scriptStat is INFO commandstats' line for EVALSHA: every script the broker runs.
type scriptStat struct {
	calls       int64
	usecPerCall float64
}

func evalshaStat(ctx context.Context, rdb *redis.Client) (scriptStat, error) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return scriptStat{}, err
	}
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_evalsha:")
		if !ok {
			continue
		}
		var s scriptStat
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "calls":
				s.calls, _ = strconv.ParseInt(v, 10, 64)
			case "usec_per_call":
				s.usecPerCall, _ = strconv.ParseFloat(v, 64)
			}
		}
		return s, nil
	}
	return scriptStat{}, fmt.Errorf("INFO commandstats has no evalsha line")
}

type claimCostResult struct {
	empty, cold, warm scriptStat
	coldCalls         int     // calls the first claim behind the jobs took (nothing remembered yet)
	warmCalls         float64 // calls per claimed job afterwards
}

// claimCost measures the claim script's own Redis time (INFO commandstats, evalsha
// usec_per_call, nothing but claims running; the median of 5 windows) with an empty queue, then with `ahead`
// same-service jobs no worker matches (requirements gpu_memory_gb 9999, written as the API
// writes them) in front of the worker's job: first the pass that reads them all, then claims
// that find them remembered.
func claimCost(ctx context.Context, b *broker.Broker, rdb *redis.Client, ahead int) (claimCostResult, error) {
	var res claimCostResult
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		return res, err
	}
	if err := b.LoadScripts(ctx); err != nil { // EVALSHA from the first call on
		return res, err
	}
	caps, _ := broker.Capabilities{WorkerID: "bench-worker-mock-0", MachineID: "bench", Services: []string{"mock"},
		Hardware:       broker.Hardware{GPUCount: 1, GPUMemoryGB: 24, RAMGB: 64, CPUCores: 16},
		CustomerAccess: broker.CustomerAccess{Isolation: "loose"}, Performance: broker.Performance{ConcurrentJobs: 1}}.Encode()
	rounds := func(n int) (scriptStat, int, error) {
		if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
			return scriptStat{}, 0, err
		}
		calls := 0
		for range n {
			if _, err := b.Submit(ctx, broker.JobSpec{Service: "mock", Priority: 10}); err != nil {
				return scriptStat{}, 0, err
			}
			j, c, err := claimUntil(ctx, b, caps)
			if err != nil || j == nil {
				return scriptStat{}, 0, fmt.Errorf("claim behind %d unmatchable jobs: job %v, %v", ahead, j, err)
			}
			calls += c
		}
		s, err := evalshaStat(ctx, rdb)
		return s, calls, err
	}
	// The medians of 5 windows: a window in which this shared machine stalled Redis does not
	// move the figure.
	windows := func(n int) (scriptStat, int, error) {
		var stats []scriptStat
		total := 0
		for range 5 {
			s, calls, err := rounds(n)
			if err != nil {
				return s, 0, err
			}
			stats = append(stats, s)
			total += calls
		}
		slices.SortFunc(stats, func(a, b scriptStat) int { return cmp.Compare(a.usecPerCall, b.usecPerCall) })
		return stats[len(stats)/2], total, nil
	}
	var err error
	if res.empty, _, err = windows(40); err != nil {
		return res, err
	}
	now := broker.ISO(time.Now())
	pipe := rdb.Pipeline()
	for k := range ahead {
		id := fmt.Sprintf("big-%d", k)
		pipe.HSet(ctx, broker.JobKey(id), "id", id, "service_required", "mock", "priority", "90", "payload", "{}",
			"requirements", `{"hardware":{"gpu_memory_gb":9999}}`, "customer_id", "", "created_at", now, "status", "pending",
			"retry_count", "0", "max_retries", "3", "workflow_id", "", "workflow_priority", "", "workflow_datetime", "",
			"current_step", "", "total_steps", "", "ctx", "")
		pipe.ZAdd(ctx, broker.KeyPending, redis.Z{Score: float64(90e15 - k), Member: id})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return res, err
	}
	if res.cold, res.coldCalls, err = rounds(1); err != nil {
		return res, err
	}
	const warm = 10
	var calls int
	if res.warm, calls, err = windows(warm); err != nil {
		return res, err
	}
	res.warmCalls = float64(calls) / (5 * warm)
	return res, nil
}
