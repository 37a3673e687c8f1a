package main

import (
	"context"
	"fmt"
	"os/exec"
	"time"

	"github.com/emp-job-queue/machine/core/accounting"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/metrics"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/gpu"
)

// accountingBench measures the CPU the per-job resource records cost at 8 GPUs and 32 slots
// (4 per GPU, each GPU's slots on its own service, a real process whose tree is read): one
// GPU sample a second, and every slot finishing a 1-second job and claiming the next, so 32
// records a second. Time is simulated, so the run measures CPU only: the same loop without the
// accountant (the fake GPU reads, the store's own job updates) is the baseline, and the
// difference is the accounting's share of a core.
func accountingBench() (row, error) {
	const gpus, perGPU, seconds = 8, 4, 60
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}()
	pids := map[string]int{}
	for g := range gpus {
		p := exec.Command("sleep", "3600")
		if err := p.Start(); err != nil {
			return row{}, fmt.Errorf("start a service process for the accounting bench: %w", err)
		}
		procs = append(procs, p)
		pids[fmt.Sprintf("svc-%d", g)] = p.Process.Pid
	}
	measure := func(withAccounting bool) time.Duration {
		at := time.Unix(1_800_000_000, 0)
		now := func() time.Time { return at }
		fake := gpu.NewFake(gpus, "", 0)
		fake.SetClock(now)
		var slots []state.Slot
		for i := range gpus * perGPU {
			slots = append(slots, state.Slot{ID: fmt.Sprintf("slot-%d", i), GPU: i % gpus})
		}
		store := state.New("bench", "", slots)
		acct := accounting.New(accounting.Params{Store: store, Metrics: metrics.New(), Now: now, GPUHourPrice: 2, KWhPrice: 0.2,
			ServicePID: func(name string) int { return pids[name] }})
		accts := make([]*accounting.Slot, len(slots))
		ctxs := make([]context.Context, len(slots))
		jobs := make([]*job.Job, len(slots))
		for i, s := range slots {
			accts[i] = acct.Slot(s.ID, accounting.Binding{GPUs: []int{s.GPU}, Service: fmt.Sprintf("svc-%d", s.GPU)})
			ctxs[i] = context.Background()
		}
		var per []time.Duration
		for range 5 {
			t0 := cpuTime()
			for range seconds {
				second := at
				rs, _ := fake.Read(context.Background())
				if withAccounting {
					acct.Observe(gpu.Snapshot{At: at, GPUs: rs})
				}
				for i, s := range slots {
					at = second.Add(time.Duration(i) * time.Second / time.Duration(len(slots)))
					if jobs[i] != nil {
						res := job.Result{Success: true}
						if withAccounting {
							accts[i].Finished(ctxs[i], jobs[i], &res)
						}
						store.JobEnded(s.ID, "completed", "")
					}
					jobs[i] = job.FromHash(map[string]string{"id": fmt.Sprintf("job-%d-%d", i, at.UnixNano()),
						"service_required": "comfyui", "created_at": at.UTC().Format(time.RFC3339Nano)})
					if withAccounting {
						ctxs[i] = accts[i].Claimed(context.Background(), jobs[i])
					}
					store.JobClaimed(s.ID, jobs[i].ID, "comfyui")
				}
				at = second.Add(time.Second)
			}
			per = append(per, (cpuTime()-t0)/seconds)
		}
		return percentile(per, 0.5)
	}
	base := measure(false)
	with := measure(true)
	cost := with - base
	return row{"job accounting, 8 GPUs, 32 slots, 32 jobs/s", fmt.Sprintf("%.3f %% of a core", cost.Seconds()*100),
		fmt.Sprintf("%.0f µs CPU a second without it", float64(base.Microseconds())),
		fmt.Sprintf("%.0f µs CPU a second", float64(cost.Microseconds())), "< 1 % of a core"}, nil
}
