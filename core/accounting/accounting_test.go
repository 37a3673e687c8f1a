package accounting_test

import (
	"context"
	"encoding/json"
	"math"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/accounting"
	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/connectors/openai"
	"github.com/emp-job-queue/machine/core/connectors/replicate"
	"github.com/emp-job-queue/machine/core/connectors/runpod"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/metrics"
	"github.com/emp-job-queue/machine/core/netguard"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/gpu"
	"github.com/emp-job-queue/machine/internal/fakejobapis"
	"github.com/emp-job-queue/machine/internal/fakeopenai"
)

const gpuMemMB = 24 * 1024

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func f(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}

func newJob(id, service string, created time.Time) *job.Job {
	fields := map[string]string{"id": id, "service_required": service}
	if !created.IsZero() {
		fields["created_at"] = created.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	return job.FromHash(fields)
}

// A job alone on a GPU, on a service with a child process: every figure against what the fake's
// curves and the processes' CPU and memory make it.
func TestJobAloneOnAGPU(t *testing.T) {
	svc := startService(t)
	store := state.New("box", "", []state.Slot{{ID: "slot-0", GPU: 0}})
	m := metrics.New()
	r := newRig(t, accounting.Params{Store: store, Metrics: m, GPUHourPrice: 2.5, KWhPrice: 0.3,
		ServicePID: func(name string) int {
			if name == "comfyui-gpu0" {
				return svc.pid()
			}
			return 0
		}})
	// The GPU lists the service among its processes (with 2 GiB) and a stranger (4 GiB).
	r.decorate = func(rs []gpu.Reading) {
		rs[0].Processes = []gpu.Process{{PID: uint32(svc.pid()), MemoryMB: 2048}, {PID: 1, MemoryMB: 4096}}
	}
	slot := r.acct.Slot("slot-0", accounting.Binding{GPUs: []int{0}, Service: "comfyui-gpu0"})
	j := newJob("job-alone", "comfyui", base.Add(-2*time.Second)) // created 2.5 s before the claim

	r.sample(0) // idle
	ctx := r.claim(0.5, slot, j)
	store.JobClaimed("slot-0", j.ID, j.Service)
	r.activity[0] = 1
	svc.do("work", "worked") // the service and its child use CPU and memory
	r.sample(1)              // reads the service tree while the child holds its 64 MiB
	r.sample(2)
	svc.do("release", "released") // the child exits; the service reaps it
	r.sample(3)
	end := job.Mark(ctx, job.PhaseUpload)
	r.clock.at(3.25)
	end()
	res, rec := r.finish(3.5, slot, ctx, j, job.Result{Success: true, Data: map[string]any{"x": 1}})
	store.JobEnded("slot-0", "completed", "")

	// Held 3 s, 0.25 s of it uploading; alone on the GPU at full activity from its claim.
	wantWh := 3 * gpu.FakePowerW(1) / 3600
	if rec.QueueWaitMS == nil || *rec.QueueWaitMS != 2500 || rec.PrepareMS != 0 || rec.RunMS != 2750 || rec.UploadMS != 250 {
		t.Errorf("times: wait %v prepare %d run %d upload %d; want 2500, 0, 2750, 250", rec.QueueWaitMS, rec.PrepareMS, rec.RunMS, rec.UploadMS)
	}
	if !near(f(rec.GPUSeconds), 3) || !near(f(rec.GPUEnergyWh), wantWh) || rec.GPUEnergySource != job.EnergyCounter {
		t.Errorf("GPU: %v s, %v Wh (%s); want 3 s, %v Wh from the counter", f(rec.GPUSeconds), f(rec.GPUEnergyWh), rec.GPUEnergySource, wantWh)
	}
	if f(rec.GPUPeakMemoryMB) != 2048 || rec.GPUMemoryShared == nil || *rec.GPUMemoryShared {
		t.Errorf("GPU memory: %v MB shared %v; want the service's own 2048 MB, not shared", f(rec.GPUPeakMemoryMB), rec.GPUMemoryShared)
	}
	// The service burnt 800 ms before the claim (not the job's), then 100 ms itself and 150 ms
	// in its child during the job, plus the child's start-up (a race-enabled binary touching
	// 64 MiB: up to a few hundred ms on a loaded box); CPU time is read in 10 ms ticks. Counting
	// the 800 ms before the claim would make it at least 1.05.
	if cpu := f(rec.CPUSeconds); !(cpu >= 0.22 && cpu < 1.0) {
		t.Errorf("cpu_seconds = %v; want about 0.25 (the service and its reaped child during the job only)", cpu)
	}
	if rss := f(rec.PeakRSSMB); !(rss >= 64) {
		t.Errorf("peak_rss_mb = %v; want at least the child's 64 MiB", rss)
	}
	if want := 2.5*3/3600 + 0.3*wantWh/1000; !near(f(rec.CostUSD), want) {
		t.Errorf("cost_usd = %v, want %v", f(rec.CostUSD), want)
	}
	if res.Data.(map[string]any)["x"] != 1 || rec.APIUsage != nil {
		t.Errorf("the result's data changed or a GPU job got api_usage: %+v", res)
	}

	// The record went into the result's JSON as metadata.resources, with the keys.
	b, _ := json.Marshal(res)
	var back struct {
		Metadata struct {
			Resources map[string]any `json:"resources"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"queue_wait_ms", "prepare_ms", "run_ms", "upload_ms", "gpu_seconds", "gpu_energy_wh",
		"gpu_energy_source", "gpu_peak_memory_mb", "gpu_memory_shared", "cpu_seconds", "peak_rss_mb", "cost_usd"} {
		if _, ok := back.Metadata.Resources[k]; !ok {
			t.Errorf("metadata.resources lacks %s: %s", k, b)
		}
	}

	// The store, the metrics and the summary have it too.
	snap := store.Snapshot()
	if len(snap.Recent) != 1 || snap.Recent[0].Resources == nil || !near(f(snap.Recent[0].Resources.GPUSeconds), 3) {
		t.Errorf("recent job in the store: %+v", snap.Recent)
	}
	if got := metricValue(t, m, "machine_job_gpu_seconds_total", "comfyui"); !near(got, 3) {
		t.Errorf("machine_job_gpu_seconds_total{service=comfyui} = %v", got)
	}
	if got := metricValue(t, m, "machine_job_gpu_energy_wh_total", "comfyui"); !near(got, wantWh) {
		t.Errorf("machine_job_gpu_energy_wh_total{service=comfyui} = %v", got)
	}
	r.sample(4) // pushes the summary to the store
	costs := store.Snapshot().Costs
	if len(costs) != 1 || costs[0].Service != "comfyui" || costs[0].Jobs != 1 || costs[0].RunMeanMS != 2750 ||
		!near(f(costs[0].WhMean), wantWh) || !near(costs[0].GPUSeconds, 3) {
		t.Errorf("summary in the store = %+v", costs)
	}
}

// Two jobs that share a GPU split its time and energy; a GPU without an energy counter has its
// power integrated over the samples.
func TestTwoJobsShareAGPU(t *testing.T) {
	r := newRig(t, accounting.Params{})
	r.fake.SetEnergyCounter(false)
	a := r.acct.Slot("slot-a", accounting.Binding{GPUs: []int{0}})
	b := r.acct.Slot("slot-b", accounting.Binding{GPUs: []int{0}})
	ja, jb := newJob("job-a", "simulation", time.Time{}), newJob("job-b", "simulation", time.Time{})

	r.sample(0) // idle: P0 = FakePowerW(0)
	ctxA := r.claim(0.5, a, ja)
	r.activity[0] = 1
	r.sample(1) // busy from here: P = FakePowerW(1)
	ctxB := r.claim(1.5, b, jb)
	r.sample(2)
	r.sample(3)
	_, recA := r.finish(3.5, a, ctxA, ja, job.Result{Success: true})
	r.sample(4)
	_, recB := r.finish(4.5, b, ctxB, jb, job.Result{Success: true})
	r.activity[0] = 0
	r.sample(5)

	// A held the GPU 3 s, 2 of them (1.5–3.5) shared; B held it 3 s, 2 of them shared.
	if !near(f(recA.GPUSeconds), 1+2.0/2) || !near(f(recB.GPUSeconds), 2.0/2+1) {
		t.Errorf("gpu_seconds A %v, B %v; want 2 each", f(recA.GPUSeconds), f(recB.GPUSeconds))
	}
	// Each sample interval's energy is the trapezoid of its two power readings; a job is charged
	// its share of the interval, and after the last sample the power last read.
	p0, p := gpu.FakePowerW(0), gpu.FakePowerW(1)
	wantA := (p0+p)/2*0.5 + p*(0.5+0.5/2) + p*1.0/2 + p*0.5/2
	wantB := p*0.5/2 + p*1.0/2 + p*(0.5/2+0.5) + p*0.5
	if !near(f(recA.GPUEnergyWh), wantA/3600) || !near(f(recB.GPUEnergyWh), wantB/3600) {
		t.Errorf("energy A %v Wh, B %v Wh; want %v and %v", f(recA.GPUEnergyWh), f(recB.GPUEnergyWh), wantA/3600, wantB/3600)
	}
	for name, rec := range map[string]job.Resources{"A": recA, "B": recB} {
		if rec.GPUEnergySource != job.EnergyIntegrated || rec.GPUMemoryShared == nil || !*rec.GPUMemoryShared ||
			f(rec.GPUPeakMemoryMB) != gpu.FakeMemoryUsedMB(gpuMemMB, 1) || rec.CPUSeconds != nil || rec.QueueWaitMS != nil {
			t.Errorf("job %s: %+v; want integrated energy, the device's peak memory flagged shared, no CPU or queue figures", name, rec)
		}
	}
}

// A job that waited for a model: the wait is preparation, and the GPU's energy during the load
// (at the load's lower activity) is the job's.
func TestJobThatWaitedForAModel(t *testing.T) {
	r := newRig(t, accounting.Params{})
	slot := r.acct.Slot("slot-1", accounting.Binding{GPUs: []int{1}})
	j := newJob("job-load", "simulation", time.Time{})

	r.sample(0)
	ctx := r.claim(0.25, slot, j)
	loaded := job.Mark(ctx, job.PhasePrepare)
	r.activity[1] = 0.4 // loading the model
	r.sample(1)
	r.clock.at(1.75)
	loaded()
	r.activity[1] = 1 // running
	r.sample(2)
	r.sample(3)
	_, rec := r.finish(3.25, slot, ctx, j, job.Result{Success: true})

	if rec.PrepareMS != 1500 || rec.RunMS != 1500 || rec.UploadMS != 0 || rec.QueueWaitMS != nil {
		t.Errorf("times: prepare %d run %d upload %d wait %v; want 1500, 1500, 0, absent (no created_at)",
			rec.PrepareMS, rec.RunMS, rec.UploadMS, rec.QueueWaitMS)
	}
	// The fake's counter advances at the power read at each sample: (0,1] at the load's power,
	// then full power; the job holds 0.75 s of the first interval and 0.25 s after the last.
	want := 0.75*gpu.FakePowerW(0.4) + 1*gpu.FakePowerW(1) + 1*gpu.FakePowerW(1) + 0.25*gpu.FakePowerW(1)
	if !near(f(rec.GPUSeconds), 3) || !near(f(rec.GPUEnergyWh), want/3600) || rec.GPUEnergySource != job.EnergyCounter {
		t.Errorf("GPU: %v s, %v Wh (%s); want 3 s, %v Wh from the counter", f(rec.GPUSeconds), f(rec.GPUEnergyWh), rec.GPUEnergySource, want/3600)
	}
	if f(rec.GPUPeakMemoryMB) != gpu.FakeMemoryUsedMB(gpuMemMB, 1) || *rec.GPUMemoryShared {
		t.Errorf("GPU memory %v MB shared %v; want the device's busy peak, not shared", f(rec.GPUPeakMemoryMB), *rec.GPUMemoryShared)
	}
}

// A GPU with neither a counter nor power readings gives no energy figure: none, not zero.
func TestNoEnergyReadingIsNone(t *testing.T) {
	r := newRig(t, accounting.Params{KWhPrice: 0.3})
	r.fake.SetEnergyCounter(false)
	r.decorate = func(rs []gpu.Reading) {
		for i := range rs {
			rs[i].PowerW = gpu.NA
		}
	}
	slot := r.acct.Slot("slot-0", accounting.Binding{GPUs: []int{0}})
	j := newJob("job-dark", "simulation", time.Time{})
	r.sample(0)
	ctx := r.claim(0.5, slot, j)
	r.sample(1)
	_, rec := r.finish(1.5, slot, ctx, j, job.Result{Success: true})
	if rec.GPUEnergySource != job.EnergyNone || rec.GPUEnergyWh != nil || rec.CostUSD != nil || !near(f(rec.GPUSeconds), 1) {
		t.Errorf("record = %+v; want gpu_seconds 1, no energy and no cost (the kWh price has nothing to price)", rec)
	}
}

// clockSaver stores assets and takes a known time doing it, on the test's clock.
type clockSaver struct {
	assets.Store
	c *clock
}

func (s clockSaver) Save(ctx context.Context, jobID string, jobCtx json.RawMessage, ext string, data []byte) (assets.Saved, error) {
	s.c.mu.Lock()
	s.c.t = s.c.t.Add(400 * time.Millisecond)
	s.c.mu.Unlock()
	return s.Store.Save(ctx, jobID, jobCtx, ext, data)
}

// API jobs carry the usage the API reported, from the in-repo fakes in the real shapes, and
// no GPU or service figures.
func TestAPIJobsReportTheirUsage(t *testing.T) {
	r := newRig(t, accounting.Params{GPUHourPrice: 2})
	oai := fakeopenai.New("sk-test")
	oaiSrv := httptest.NewServer(oai.Handler())
	defer oaiSrv.Close()
	apis := fakejobapis.New("tok")
	apiSrv := httptest.NewServer(apis.Handler())
	defer apiSrv.Close()
	apis.SetBase(apiSrv.URL)
	saver := clockSaver{assets.Store{Dir: t.TempDir()}, r.clock}
	conns := map[string]interface {
		Run(context.Context, *job.Job, job.ProgressFunc) (job.Result, error)
	}{
		"openai": openai.New(openai.Settings{BaseURL: oaiSrv.URL + "/v1", APIKey: "sk-test", PollEvery: time.Millisecond,
			RatePerSec: 1000, Assets: saver}),
		"replicate": replicate.New(replicate.Settings{BaseURL: apiSrv.URL + "/replicate/v1", Token: "tok", PollEvery: time.Millisecond,
			RatePerSec: 1000, Assets: saver, Downloads: netguard.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}}),
		"runpod": runpod.New(runpod.Settings{BaseURL: apiSrv.URL + "/runpod/v2", APIKey: "tok", EndpointID: "ep",
			PollEvery: time.Millisecond, RatePerSec: 1000}),
	}
	for _, tc := range []struct {
		conn, service, payload string
		usage                  map[string]any
		uploadMS               int64
	}{
		{"openai", "openai_text", `{"prompt":"hi"}`, fakeopenai.ChatUsage(), 0},
		{"openai", "openai_image", `{"prompt":"a cat"}`, fakeopenai.ImageUsage(), 400},
		{"openai", "openai_responses", `{"input":"q"}`, fakeopenai.ResponseUsage(), 0},
		{"replicate", "replicate", `{"model":"owner/name","input":{}}`, fakejobapis.ReplicateMetrics(), 800}, // two outputs
		{"runpod", "runpod", `{"input":{"x":1}}`, fakejobapis.RunPodUsage(), 0},
	} {
		t.Run(tc.service, func(t *testing.T) {
			slot := r.acct.Slot("slot-"+tc.conn, accounting.Binding{})
			j := newJob("job-"+tc.service, tc.service, base)
			j.Payload = json.RawMessage(tc.payload)
			ctx := r.claim(1, slot, j)
			res, err := conns[tc.conn].Run(ctx, j, func(job.Progress) {})
			if err != nil {
				t.Fatal(err)
			}
			done := r.clock.Now().Add(time.Second)
			_, rec := r.finish(done.Sub(base).Seconds(), slot, ctx, j, res)
			want, _ := json.Marshal(tc.usage) // as it travels: JSON numbers
			var wantUsage map[string]any
			_ = json.Unmarshal(want, &wantUsage)
			if !reflect.DeepEqual(rec.APIUsage, wantUsage) {
				t.Errorf("api_usage = %v, want %v", rec.APIUsage, wantUsage)
			}
			if rec.UploadMS != tc.uploadMS || rec.GPUSeconds != nil || rec.GPUEnergySource != job.EnergyNone || rec.CPUSeconds != nil || rec.CostUSD != nil {
				t.Errorf("record = %+v; want upload %d ms, no GPU, CPU or cost figures", rec, tc.uploadMS)
			}
			b, _ := json.Marshal(res)
			if strings.Contains(string(b), `"usage"`) != (tc.service == "openai_text") {
				// Only openai_text had usage in its data before; nothing else in the result changes.
				t.Errorf("result JSON %s", b)
			}
		})
	}
}

// The summary counts every job of the last hour, and forgets older ones.
func TestSummaryOverTheLastHour(t *testing.T) {
	r := newRig(t, accounting.Params{})
	slot := r.acct.Slot("slot-0", accounting.Binding{GPUs: []int{0}})
	r.activity[0] = 1
	r.sample(0)
	// 20 jobs of 1..20 s each, back to back.
	at := 0.0
	for i := 1; i <= 20; i++ {
		j := newJob("j", "simulation", time.Time{})
		ctx := r.claim(at, slot, j)
		at += float64(i)
		r.finish(at, slot, ctx, j, job.Result{Success: true})
	}
	c := r.acct.Summary()
	if len(c) != 1 || c[0].Jobs != 20 || c[0].RunMeanMS != 10500 || c[0].RunP95MS != 19000 || !near(c[0].GPUSeconds, 210) {
		t.Fatalf("summary = %+v; want 20 jobs, mean 10.5 s, p95 19 s, 210 GPU-seconds", c)
	}
	if !near(f(c[0].WhMean), 210*gpu.FakePowerW(1)/3600/20) || !near(f(c[0].WhP95), 19*gpu.FakePowerW(1)/3600) {
		t.Errorf("energy summary = %v mean, %v p95", f(c[0].WhMean), f(c[0].WhP95))
	}
	r.clock.at(at + 2*3600)
	if c := r.acct.Summary(); len(c) != 0 {
		t.Errorf("two hours later the summary still holds %+v", c)
	}
}

// metricValue reads a counter of the registry by name and service label.
func metricValue(t *testing.T, m *metrics.Metrics, name, service string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		if fam.GetName() != name {
			continue
		}
		for _, mt := range fam.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "service" && l.GetValue() == service {
					return mt.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{service=%q} in the registry", name, service)
	return 0
}
