package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/internal/redistest"
	"github.com/emp-job-queue/machine/internal/simfleet"
)

// fleetSize is what one fleet size measured.
type fleetSize struct {
	Machines          int     `json:"machines"`
	Jobs              int     `json:"jobs"`
	ClaimCallsPerJob  float64 `json:"claim_calls_per_job"`
	EvalshaPerJob     float64 `json:"evalsha_calls_per_job"` // every script (claim, relay, start, complete)
	CommandsPerJob    float64 `json:"redis_commands_per_job"`
	RedisCPUMicrosJob float64 `json:"redis_cpu_us_per_job"`
	PickupP50MS       float64 `json:"pickup_p50_ms"`
	PickupP99MS       float64 `json:"pickup_p99_ms"`
}

// fleetScenario runs fleets of idle machines (one slot each) and submits jobs at a steady rate
// low enough that most machines stay idle: the case where a herd would cost most.
func fleetScenario(o opts) (map[string]any, string, error) {
	sizes, jobs, rate := []int{10, 100, 1000}, 1000, 250.0
	if o.quick {
		sizes, jobs = []int{10, 30}, 100
	}
	srv, stop, err := redistest.StartTemp("sim-fleet")
	if err != nil {
		return nil, "", err
	}
	defer stop()
	var results []fleetSize
	for _, n := range sizes {
		r, err := runFleet(srv.Addr, n, jobs, rate)
		if err != nil {
			return nil, "", fmt.Errorf("%d machines: %w", n, err)
		}
		results = append(results, r)
	}
	big, small := results[len(results)-1], results[0]
	report := map[string]any{
		"fleet_machines":                   big.Machines,
		"claim_calls_per_job":              big.ClaimCallsPerJob,
		"redis_cpu_us_per_job":             big.RedisCPUMicrosJob,
		"pickup_p50_ms":                    big.PickupP50MS,
		"pickup_p99_ms":                    big.PickupP99MS,
		"small_fleet_redis_cpu_us_per_job": small.RedisCPUMicrosJob,
		"fleet_sizes":                      results,
	}
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "machines\tjobs\tclaims/job\tscripts/job\tcommands/job\tRedis CPU µs/job\tpickup p50 ms\tp99 ms\t")
	for _, r := range results {
		fmt.Fprintf(w, "%d\t%d\t%.2f\t%.2f\t%.1f\t%.0f\t%.2f\t%.2f\t\n", r.Machines, r.Jobs, r.ClaimCallsPerJob,
			r.EvalshaPerJob, r.CommandsPerJob, r.RedisCPUMicrosJob, r.PickupP50MS, r.PickupP99MS)
	}
	w.Flush()
	return report, b.String(), nil
}

func runFleet(addr string, machines, jobs int, rate float64) (fleetSize, error) {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		return fleetSize{}, err
	}
	f, err := simfleet.Start(simfleet.Config{Addr: addr, Machines: machines, Service: "sim",
		PollInterval: 2 * time.Second, JobTime: 2 * time.Millisecond})
	if err != nil {
		return fleetSize{}, err
	}
	defer f.Stop()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := f.Settle(sctx, machines); err != nil {
		return fleetSize{}, err
	}
	for rdb.PubSubNumSub(ctx, broker.ChanSubmitted).Val()[broker.ChanSubmitted] < broker.RelayCount {
		if sctx.Err() != nil {
			return fleetSize{}, fmt.Errorf("no relay subscribed to job_submitted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b := broker.New(rdb)
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		return fleetSize{}, err
	}
	cpu0, err := redisCPU(ctx, rdb)
	if err != nil {
		return fleetSize{}, err
	}
	calls0, _ := f.Claims()
	submitted := make(map[string]time.Time, jobs)
	ids := make([]string, 0, jobs)
	start := time.Now()
	for i := range jobs {
		time.Sleep(time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))))
		at := time.Now()
		id, err := b.Submit(ctx, broker.JobSpec{Service: "sim", Payload: json.RawMessage(`{}`)})
		if err != nil {
			return fleetSize{}, err
		}
		submitted[id] = at
		ids = append(ids, id)
	}
	for rdb.HLen(ctx, broker.KeyCompleted).Val() < int64(jobs) {
		if sctx.Err() != nil {
			return fleetSize{}, fmt.Errorf("only %d of %d jobs completed", rdb.HLen(ctx, broker.KeyCompleted).Val(), jobs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := f.Settle(sctx, machines); err != nil {
		return fleetSize{}, err
	}
	cpu1, err := redisCPU(ctx, rdb)
	if err != nil {
		return fleetSize{}, err
	}
	calls1, _ := f.Claims()
	evalsha, commands := commandStats(ctx, rdb)
	var pickups []float64
	for _, id := range ids {
		sec, _ := strconv.ParseFloat(rdb.HGet(ctx, "job:"+id, "assigned_at").Val(), 64)
		at := time.Unix(0, int64(sec*1e9))
		pickups = append(pickups, float64(at.Sub(submitted[id]).Microseconds())/1000)
	}
	slices.Sort(pickups)
	n := float64(jobs)
	return fleetSize{Machines: machines, Jobs: jobs, ClaimCallsPerJob: float64(calls1-calls0) / n,
		EvalshaPerJob: evalsha / n, CommandsPerJob: commands / n, RedisCPUMicrosJob: (cpu1 - cpu0) * 1e6 / n,
		PickupP50MS: quantile(pickups, 0.5), PickupP99MS: quantile(pickups, 0.99)}, nil
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(int(q*float64(len(sorted))), len(sorted)-1)]
}

// redisCPU is the server's CPU time so far, in seconds (INFO cpu: system and user, every thread).
func redisCPU(ctx context.Context, rdb *redis.Client) (float64, error) {
	info, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	total := 0.0
	for _, line := range strings.Split(info, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			x, _ := strconv.ParseFloat(v, 64)
			total += x
		}
	}
	return total, nil
}

// commandStats returns the EVALSHA calls and all commands since CONFIG RESETSTAT (INFO
// commandstats, which counts the commands scripts run too), less the measurement's own.
func commandStats(ctx context.Context, rdb *redis.Client) (evalsha, all float64) {
	info := rdb.Info(ctx, "commandstats").Val()
	for _, line := range strings.Split(info, "\r\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		calls := 0.0
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				calls, _ = strconv.ParseFloat(v, 64)
			}
		}
		switch name {
		case "cmdstat_evalsha":
			evalsha = calls
		case "cmdstat_info", "cmdstat_config|resetstat", "cmdstat_hlen":
			continue // the measurement's own polling
		}
		all += calls
	}
	return evalsha, all
}
