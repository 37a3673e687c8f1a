package machine_test

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/job"
)

// A simulation job on a simulated GPU ends with its resource record in jobs:completed, in the
// complete_job message, in /status and in the metrics; its model load counts as preparation.
func TestJobResourcesThroughTheMachine(t *testing.T) {
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation:1", "MACHINE_GPU_SAMPLE_INTERVAL_MS": "100",
		"MACHINE_GPU_HOUR_PRICE": "3.6"})
	ctx := context.Background()
	sub := h.rdb.Subscribe(ctx, "complete_job")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	id := h.submit("simulation", `{"duration_ms":600,"steps":3,"model_load_ms":300}`)
	var msg struct {
		JobID  string `json:"job_id"`
		Result struct {
			Data     map[string]any `json:"data"`
			Metadata struct {
				Resources job.Resources `json:"resources"`
			} `json:"metadata"`
		} `json:"result"`
	}
	for msg.JobID != id {
		m, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(m.Payload), &msg); err != nil {
			t.Fatal(err)
		}
	}
	var stored struct {
		Data struct {
			Metadata struct {
				Resources job.Resources `json:"resources"`
			} `json:"metadata"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(h.rdb.HGet(ctx, "jobs:completed", id).Val()), &stored); err != nil {
		t.Fatal(err)
	}
	for where, r := range map[string]job.Resources{"complete_job": msg.Result.Metadata.Resources, "jobs:completed": stored.Data.Metadata.Resources} {
		if r.GPUSeconds == nil || *r.GPUSeconds < 0.9 || r.GPUEnergyWh == nil || *r.GPUEnergyWh <= 0 || r.GPUEnergySource != job.EnergyCounter {
			t.Errorf("%s: GPU figures %+v; want ≥ 0.9 GPU-seconds and energy from the fake's counter", where, r)
		}
		if r.PrepareMS < 300 || r.RunMS < 600 || r.QueueWaitMS == nil || r.GPUPeakMemoryMB == nil || r.CostUSD == nil ||
			math.Abs(*r.CostUSD-3.6**r.GPUSeconds/3600) > 1e-12 {
			t.Errorf("%s: record %+v; want the 300 ms model load as preparation, the run, the queue wait, the peak memory and the cost", where, r)
		}
	}
	if msg.Result.Data["simulated"] != true {
		t.Errorf("the result's data changed: %v", msg.Result.Data)
	}

	get := func(path string) string {
		resp, err := http.Get("http://" + h.m.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	h.waitFor("/status to summarize the job", func() bool {
		return strings.Contains(get("/status"), `"resources_last_hour":[{"gpu_energy_wh"`)
	})
	var st struct {
		Recent []struct {
			JobID     string         `json:"job_id"`
			Resources *job.Resources `json:"resources"`
		} `json:"recent_jobs"`
		Costs []map[string]any `json:"resources_last_hour"`
	}
	if err := json.Unmarshal([]byte(get("/status")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Recent) != 1 || st.Recent[0].Resources == nil || st.Costs[0]["service"] != "simulation" || st.Costs[0]["jobs"] != 1.0 {
		t.Errorf("/status recent_jobs %+v, resources_last_hour %v", st.Recent, st.Costs)
	}
	metrics := get("/metrics")
	for _, want := range []string{`machine_job_gpu_seconds_total{service="simulation"}`, `machine_job_gpu_energy_wh_total{service="simulation"}`,
		`machine_job_run_seconds_count{service="simulation"} 1`, `machine_job_gpu_energy_wh_count{service="simulation"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if snap := h.m.Control().Snapshot(); len(snap.Recent) != 1 || snap.Recent[0].Resources == nil || len(snap.Costs) != 1 {
		t.Errorf("the console's snapshot lacks the record or the summary: %+v %+v", snap.Recent, snap.Costs)
	} else if d := snap.Recent[0].Detail.Resources; d["gpu_seconds"] == nil || d["gpu_energy_source"] == nil {
		t.Errorf("the job's describe view lacks the record: %v", d)
	}
}
