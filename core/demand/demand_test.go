package demand_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/demand"
	"github.com/emp-job-queue/machine/internal/redistest"
)

const comfyWorkflow = `{"workflow":{
 "4":{"class_type":"CheckpointLoaderSimple","inputs":{"ckpt_name":"sdxl_base.safetensors"}},
 "5":{"class_type":"LoraLoader","inputs":{"lora_name":"pixel.safetensors","model":["4",0],"clip":["4",1]}},
 "6":{"class_type":"VAELoader","inputs":{"vae_name":"sdxl_vae.safetensors"}},
 "7":{"class_type":"ControlNetLoader","inputs":{"control_net_name":"canny.pth"}},
 "8":{"class_type":"UpscaleModelLoader","inputs":{"upscale_model_name":"4x.pth"}},
 "9":{"class_type":"KSampler","inputs":{"seed":3,"steps":20,"model":["5",0]}}}}`

func TestModelsJobsReference(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 10000) + `1` + strings.Repeat(`}`, 10000)
	tests := []struct {
		name          string
		payload, reqs string
		want          []string
	}{
		{"comfyui loaders, links ignored", comfyWorkflow, "",
			[]string{"sdxl_base.safetensors", "pixel.safetensors", "sdxl_vae.safetensors", "canny.pth", "4x.pth"}},
		{"api job's model", `{"model":"gpt-image-1","prompt":"a cat"}`, "", []string{"gpt-image-1"}},
		{"a nested model is not an api model", `{"input":{"model":"x"}}`, "", nil},
		{"requirements.models array, deduplicated", `{"ckpt_name":"a"}`, `{"models":["a","b",3]}`, []string{"a", "b"}},
		{"requirements.models string", ``, `{"models":"flux.safetensors"}`, []string{"flux.safetensors"}},
		{"malformed payload keeps what came first", `{"ckpt_name":"a","x":`, "", []string{"a"}},
		{"deep nesting is cut, not followed", `{"ckpt_name":"a","d":` + deep + `}`, "", []string{"a"}},
		{"oversize payload is not parsed", `{"ckpt_name":"` + strings.Repeat("x", demand.MaxPayloadBytes) + `"}`, "", nil},
		{"overlong names are dropped", `{"ckpt_name":"` + strings.Repeat("x", demand.MaxNameLen+1) + `"}`, "", nil},
		{"not json", `hello`, `nope`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := demand.Models([]byte(tc.payload), []byte(tc.reqs))
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Models = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestModelsPerJobAreCapped(t *testing.T) {
	var b strings.Builder
	b.WriteString("{")
	for i := range 1000 {
		fmt.Fprintf(&b, `"n%d":{"lora_name":"l%d"},`, i, i)
	}
	b.WriteString(`"end":1}`)
	if got := demand.Models([]byte(b.String()), nil); len(got) != demand.MaxModelsPerJob {
		t.Fatalf("got %d models, want the cap %d", len(got), demand.MaxModelsPerJob)
	}
}

type env struct {
	ctx context.Context
	rdb *redis.Client
	b   *broker.Broker
}

func newEnv(t *testing.T) *env {
	t.Helper()
	rdb := redistest.Start(t).Client()
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	b := broker.New(rdb)
	if err := b.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	return &env{ctx: ctx, rdb: rdb, b: b}
}

func (e *env) submit(t *testing.T, service, payload string) string {
	t.Helper()
	id, err := e.b.Submit(e.ctx, broker.JobSpec{Service: service, Payload: json.RawMessage(payload)})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// eventually polls cond; the deadline is the test context's, not a timing assertion.
func eventually(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("never happened: %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestTrackerFollowsTheQueue(t *testing.T) {
	e := newEnv(t)
	tr := demand.New(demand.Params{Client: e.rdb, ReconcileEvery: time.Hour})
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// Run reconciles once subscribed; a job submitted now may arrive by message or by
	// reconciliation, never twice.
	eventually(t, e.ctx, "subscribed", func() bool {
		n, _ := e.rdb.PubSubNumSub(e.ctx, broker.ChanSubmitted).Result()
		return n[broker.ChanSubmitted] > 0
	})

	for range 3 {
		e.submit(t, "comfyui", comfyWorkflow)
	}
	e.submit(t, "openai_image", `{"model":"gpt-image-1"}`)
	e.submit(t, "openai_image", `{"model":"gpt-image-1"}`)
	eventually(t, e.ctx, "5 jobs tracked", func() bool {
		return tr.PendingFor("comfyui") == 3 && tr.PendingFor("openai_image") == 2
	})
	if got := tr.ModelScore("sdxl_base.safetensors"); got < 3 {
		t.Fatalf("sdxl_base score %v, want ≥ 3 (three pending jobs)", got)
	}
	if w := tr.Wanted([]string{"openai_image"}, 10); !slices.Equal(w, []string{"gpt-image-1"}) {
		t.Fatalf("Wanted(openai_image) = %q", w)
	}

	// A claim by a slot removes its job through the job_claimed message.
	caps, _ := broker.Capabilities{WorkerID: "w1", Services: []string{"comfyui"}}.Encode()
	j, _, err := e.b.Claim(e.ctx, caps, 100, 0)
	if err != nil || j == nil {
		t.Fatalf("claim: %v %v", j, err)
	}
	eventually(t, e.ctx, "claimed job forgotten", func() bool { return tr.PendingFor("comfyui") == 2 })

	// A job taken without a message (an old worker, a cancel we missed) is repaired by the
	// reconciliation.
	ids, _ := e.rdb.ZRange(e.ctx, broker.KeyPending, 0, -1).Result()
	for _, id := range ids {
		if svc, _ := e.rdb.HGet(e.ctx, broker.JobKey(id), "service_required").Result(); svc == "openai_image" {
			e.rdb.ZRem(e.ctx, broker.KeyPending, id)
			break
		}
	}
	if err := tr.Reconcile(e.ctx); err != nil {
		t.Fatal(err)
	}
	s := tr.Snapshot()
	if s.Pending["openai_image"] != 1 || s.Pending["comfyui"] != 2 || s.QueueLength != 3 || s.Unattrib != 0 {
		t.Fatalf("after reconcile: %+v", s)
	}
	if s.Rates["comfyui"] <= s.Rates["openai_image"] {
		t.Fatalf("comfyui had more arrivals than openai_image: %v", s.Rates)
	}
}

// A queue that was full before the machine started is learnt from its head, a bounded number
// of jobs per reconciliation; the rest is counted, not read.
func TestReconcileReadsABoundedHead(t *testing.T) {
	e := newEnv(t)
	for i := range 40 {
		e.submit(t, "comfyui", fmt.Sprintf(`{"ckpt_name":"m%d"}`, i%4))
	}
	tr := demand.New(demand.Params{Client: e.rdb, HeadWindow: 20, HeadReads: 8})
	if err := tr.Reconcile(e.ctx); err != nil {
		t.Fatal(err)
	}
	s := tr.Snapshot()
	if s.Pending["comfyui"] != 8 || s.Unattrib != 32 || s.QueueLength != 40 {
		t.Fatalf("first reconcile: pending %v unattributed %d queue %d; want 8, 32, 40", s.Pending, s.Unattrib, s.QueueLength)
	}
	if len(s.Models) == 0 {
		t.Fatal("models of the head jobs were not learnt")
	}
	// Learnt jobs are not arrivals: they say nothing of the arrival rate.
	if s.Rates["comfyui"] != 0 {
		t.Fatalf("reconciled jobs counted as arrivals: %v", s.Rates)
	}
	for range 2 {
		if err := tr.Reconcile(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := tr.PendingFor("comfyui"); got != 20 {
		t.Fatalf("after 3 reconciliations %d jobs known, want the head window of 20", got)
	}
}

func TestArrivalRateDecays(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	tr := demand.New(demand.Params{Now: func() time.Time { return now }, HalfLife: time.Minute})
	for i := range 120 { // 1 job/s for two minutes
		msg, _ := json.Marshal(map[string]any{"job_id": fmt.Sprint(i), "service_required": "sim", "payload": map[string]any{}})
		tr.Observe(broker.ChanSubmitted, msg)
		now = now.Add(time.Second)
	}
	r := tr.Snapshot().Rates["sim"]
	if math.Abs(r-60)/60 > 0.3 { // an EWMA of a steady 60/min after two half-lives
		t.Fatalf("rate %.1f/min, want about 60", r)
	}
	now = now.Add(10 * time.Minute)
	if r := tr.Snapshot().Rates["sim"]; r > 0.1 {
		t.Fatalf("rate after 10 idle half-lives %.3f/min, want about 0", r)
	}
}

func TestUntrustedMessagesAreBounded(t *testing.T) {
	tr := demand.New(demand.Params{MaxServices: 2, MaxTracked: 3})
	for i := range 10 {
		msg, _ := json.Marshal(map[string]any{"job_id": fmt.Sprint(i), "service_required": fmt.Sprint("svc", i%5)})
		tr.Observe(broker.ChanSubmitted, msg)
	}
	tr.Observe(broker.ChanSubmitted, []byte(`{"job_id":`))
	tr.Observe(broker.ChanSubmitted, []byte(`{"job_id":"x","service_required":"`+strings.Repeat("s", 1000)+`"}`))
	s := tr.Snapshot()
	if len(s.Rates) > 2 {
		t.Fatalf("services %v exceed the cap of 2", s.Rates)
	}
	total := 0
	for _, n := range s.Pending {
		total += n
	}
	if total > 3 {
		t.Fatalf("%d jobs tracked, cap 3", total)
	}
}
