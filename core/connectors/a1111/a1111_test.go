package a1111_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/connectors/a1111"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/internal/fakea1111"
)

func setup(t *testing.T) (*fakea1111.Server, *a1111.Connector, string) {
	t.Helper()
	fake := fakea1111.New()
	srv := httptest.NewServer(fake.Handler())
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	return fake, a1111.New(a1111.Settings{BaseURL: srv.URL, PollEvery: time.Millisecond, Assets: assets.Store{Dir: dir}}), dir
}

type recorder struct {
	mu  sync.Mutex
	got []job.Progress
}

func (r *recorder) add(p job.Progress) { r.mu.Lock(); r.got = append(r.got, p); r.mu.Unlock() }
func (r *recorder) maxStep() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range r.got {
		n = max(n, p.Step)
	}
	return n
}

func run(c *a1111.Connector, ctx context.Context, payload string, rec *recorder) (job.Result, error) {
	if rec == nil {
		rec = &recorder{}
	}
	return c.Run(ctx, &job.Job{ID: "a1", Service: "a1111", Payload: json.RawMessage(payload), Ctx: json.RawMessage(`{"prefix":"out"}`)}, rec.add)
}

// txt2img gets the old worker's defaults for what the payload leaves out, reports the sampling
// steps A1111 reports, and saves every image.
func TestTxt2ImgDefaultsProgressAndAssets(t *testing.T) {
	fake, c, dir := setup(t)
	fake.StepDelay = 5 * time.Millisecond
	rec := &recorder{}
	res, err := run(c, context.Background(), `{"prompt":"a lighthouse","steps":12,"cfg_scale":5.5,"batch_size":2,"ctx":{"x":1},"bucket":"b"}`, rec)
	if err != nil {
		t.Fatal(err)
	}
	sent := fake.Requests()[0]
	for k, want := range map[string]any{"prompt": "a lighthouse", "steps": 12.0, "cfg_scale": 5.5, "width": 512.0, "height": 512.0,
		"sampler_name": "Euler a", "scheduler": "automatic", "seed": -1.0, "do_not_save_samples": true, "n_iter": 1.0} {
		if sent[k] != want {
			t.Errorf("sent %s = %v, want %v", k, sent[k], want)
		}
	}
	if _, ok := sent["ctx"]; ok || sent["bucket"] != nil {
		t.Errorf("storage keys were sent to A1111: %v", sent)
	}
	if rec.maxStep() < 2 {
		t.Errorf("progress steps %v: none came from /sdapi/v1/progress", rec.got)
	}
	d := res.Data.(map[string]any)
	urls := d["image_urls"].([]string)
	if len(urls) != 2 || d["image_url"] != urls[0] || len(d["images"].([]string)) != 2 || d["info"].(map[string]any)["steps"] != 12.0 {
		t.Errorf("data = %v", d)
	}
	for _, f := range []string{"/out/a1.png", "/out/a1_1.png"} {
		if b, err := os.ReadFile(dir + f); err != nil || string(b) != string(fakea1111.PNG) {
			t.Errorf("%s: %q %v", f, b, err)
		}
	}
}

func TestImg2ImgFetchesImageURLs(t *testing.T) {
	fake, c, _ := setup(t)
	img := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("input-png")) }))
	defer img.Close()
	if _, err := run(c, context.Background(), `{"prompt":"repaint","init_images":["`+img.URL+`/in.png","aGVsbG8="],"denoising_strength":0.6}`, nil); err != nil {
		t.Fatal(err)
	}
	sent := fake.Requests()[0]
	imgs := sent["init_images"].([]any)
	if imgs[0] != base64.StdEncoding.EncodeToString([]byte("input-png")) || imgs[1] != "aGVsbG8=" || sent["denoising_strength"] != 0.6 {
		t.Errorf("img2img request = %v", sent)
	}
	if _, err := run(c, context.Background(), `{"prompt":"x","mode":"img2img"}`, nil); !job.IsPermanent(err) || !strings.Contains(err.Error(), "init_images") {
		t.Errorf("img2img without images: %v", err)
	}
}

// Cancelling a job interrupts the generation, so the instance is free for the next one.
func TestCancelInterruptsTheGeneration(t *testing.T) {
	fake, c, _ := setup(t)
	hold := make(chan struct{})
	fake.Hold = hold
	ctx, cancel := context.WithCancel(context.Background())
	rec := &recorder{}
	done := make(chan error, 1)
	go func() { _, err := run(c, ctx, `{"prompt":"slow"}`, rec); done <- err }()
	for rec.maxStep() < 1 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if fake.Interrupts() != 1 {
		t.Errorf("interrupts = %d, want 1", fake.Interrupts())
	}
	close(hold) // the next generation is not held
	if _, err := run(c, context.Background(), `{"prompt":"next","steps":2}`, nil); err != nil {
		t.Errorf("the next job after an interrupt: %v", err)
	}
}

func TestRefusalsAndFailures(t *testing.T) {
	fake, c, _ := setup(t)
	for payload, want := range map[string]string{
		`{"prompt":"x","sampler_name":"Nope"}`: "Sampler not found",
		`{"prompt":"x","steps":"many"}`:        "value is not a valid integer",
		`{"negative_prompt":"x"}`:              "has no prompt",
	} {
		if _, err := run(c, context.Background(), payload, nil); !job.IsPermanent(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want a permanent failure saying %q", payload, err, want)
		}
	}
	fake.FailNext = true
	if _, err := run(c, context.Background(), `{"prompt":"x","steps":1}`, nil); err == nil || job.IsPermanent(err) || !strings.Contains(err.Error(), "CUDA out of memory") {
		t.Errorf("500: %v", err)
	}
	gone := a1111.New(a1111.Settings{BaseURL: "http://127.0.0.1:1"})
	if _, err := run(gone, context.Background(), `{"prompt":"x"}`, nil); err == nil || job.IsPermanent(err) || !strings.Contains(err.Error(), "does not answer") {
		t.Errorf("unreachable: %v", err)
	}
}
