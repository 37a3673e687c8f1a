package openai_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/connectors/openai"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/internal/fakeopenai"
)

const key = "sk-test-0123456789abcdef"

func setup(t testing.TB) (*fakeopenai.Server, *openai.Connector, string) {
	t.Helper()
	fake := fakeopenai.New(key)
	srv := httptest.NewServer(fake.Handler())
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	c := openai.New(openai.Settings{BaseURL: srv.URL + "/v1", APIKey: key, PollEvery: 10 * time.Millisecond,
		RatePerSec: 100, Assets: assets.Store{Dir: dir, BaseURL: "https://cdn.example.com/assets"}})
	return fake, c, dir
}

func runJob(c *openai.Connector, service, payload, ctxJSON string) (job.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.Run(ctx, &job.Job{ID: "job-7", Service: service, Payload: json.RawMessage(payload), Ctx: json.RawMessage(ctxJSON)}, func(job.Progress) {})
}

func TestText(t *testing.T) {
	_, c, _ := setup(t)
	res, err := runJob(c, "openai_text", `{"prompt":"hello","system_prompt":"be brief"}`, "")
	if err != nil || res.Data.(map[string]any)["text"] != "echo: hello" {
		t.Fatalf("run = %+v, %v", res, err)
	}
}

func TestImageSavedAsAsset(t *testing.T) {
	_, c, dir := setup(t)
	res, err := runJob(c, "openai_image", `{"prompt":"a cat"}`, `{"prefix":"user-1/wf-2","filename":"cat.jpg"}`)
	if err != nil {
		t.Fatal(err)
	}
	d := res.Data.(map[string]any)
	if d["image_url"] != "https://cdn.example.com/assets/user-1/wf-2/cat.png" || d["mime_type"] != "image/png" {
		t.Errorf("data = %v", d)
	}
	got, err := os.ReadFile(dir + "/user-1/wf-2/cat.png")
	if err != nil || string(got) != string(fakeopenai.PNG) {
		t.Errorf("asset = %q, %v", got, err)
	}
}

func TestBackgroundResponse(t *testing.T) {
	_, c, _ := setup(t)
	res, err := runJob(c, "openai_responses", `{"dynamic_json":{"input":"q","bucket":"never-sent"}}`, "")
	if err != nil || res.Data.(map[string]any)["text"] != "the answer" {
		t.Fatalf("run = %+v, %v", res, err)
	}
}

func TestRateLimitHonoursRetryAfter(t *testing.T) {
	fake, c, _ := setup(t)
	fake.RateLimited = 1
	start := time.Now()
	if _, err := runJob(c, "openai_text", `{"prompt":"x"}`, ""); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 900*time.Millisecond {
		t.Errorf("retried after %s; the 429 said Retry-After: 1", waited)
	}
}

func TestServerErrorsAreRetried(t *testing.T) {
	fake, c, _ := setup(t)
	fake.ServerErrors = 2
	if _, err := runJob(c, "openai_text", `{"prompt":"x"}`, ""); err != nil {
		t.Fatalf("two 500s then success: %v", err)
	}
	if fake.Requests != 3 {
		t.Errorf("requests = %d", fake.Requests)
	}
}

func TestMalformedJSONIsAnError(t *testing.T) {
	fake, c, _ := setup(t)
	fake.Malformed = true
	_, err := runJob(c, "openai_text", `{"prompt":"x"}`, "")
	if err == nil || !strings.Contains(err.Error(), "malformed JSON") {
		t.Fatalf("err = %v", err)
	}
}

func TestBadKeyIsPermanentAndHidden(t *testing.T) {
	fake := fakeopenai.New("the-right-key-xyz")
	srv := httptest.NewServer(fake.Handler())
	defer srv.Close()
	c := openai.New(openai.Settings{BaseURL: srv.URL + "/v1", APIKey: key})
	_, err := runJob(c, "openai_text", `{"prompt":"x"}`, "")
	if !job.IsPermanent(err) || !strings.Contains(err.Error(), "401") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), key) || strings.Contains(err.Error(), key[:len(key)/2]) {
		t.Errorf("the error shows the key: %v", err)
	}
}

// A breaker opens after repeated failures: the connector reports itself unavailable, so the
// machine stops claiming its jobs.
func TestBreakerOpensAfterRepeatedFailures(t *testing.T) {
	fake, c, _ := setup(t)
	fake.ServerErrors = 1000
	for range 2 {
		_, _ = runJob(c, "openai_text", `{"prompt":"x"}`, "")
	}
	if c.Available() {
		t.Fatal("still available after repeated 500s")
	}
	if _, err := runJob(c, "openai_text", `{"prompt":"x"}`, ""); err == nil || !strings.Contains(err.Error(), "not calling it") {
		t.Errorf("call with the breaker open: %v", err)
	}
}

func TestUnsupportedServiceAndMissingPrompt(t *testing.T) {
	_, c, _ := setup(t)
	if _, err := runJob(c, "openai_img2img", `{}`, ""); !job.IsPermanent(err) {
		t.Errorf("img2img: %v", err)
	}
	if _, err := runJob(c, "openai_text", `{}`, ""); !job.IsPermanent(err) {
		t.Errorf("no prompt: %v", err)
	}
}
