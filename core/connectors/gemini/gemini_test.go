package gemini_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/connectors/gemini"
	"github.com/emp-job-queue/machine/core/connectors/remote"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/internal/fakegemini"
)

const key = "AIzaSyFAKE-gemini-key-0123456789"

func setup(t *testing.T, apiKey string, retries int) (*fakegemini.Server, *gemini.Connector, string, string) {
	t.Helper()
	fake := fakegemini.New(key)
	srv := httptest.NewServer(fake.Handler())
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	c := gemini.New(gemini.Settings{URL: srv.URL + "/v1beta/models/gemini-2.5-flash-image-preview:generateContent", APIKey: apiKey,
		MaxRetries: retries, RatePerSec: 1000, Assets: assets.Store{Dir: dir}})
	return fake, c, dir, srv.URL
}

func run(c *gemini.Connector, payload string) (job.Result, error) {
	return c.Run(context.Background(), &job.Job{ID: "g1", Service: "gem-nano-banana", Payload: json.RawMessage(payload)}, func(job.Progress) {})
}

func TestImageIsSavedAsAnAsset(t *testing.T) {
	fake, c, dir, _ := setup(t, key, 3)
	res, err := run(c, `{"prompt":"a banana wearing sunglasses"}`)
	if err != nil {
		t.Fatal(err)
	}
	d := res.Data.(map[string]any)
	if !strings.HasPrefix(d["image_url"].(string), "file://") || d["mime_type"] != "image/png" || d["content_type"] != "image" ||
		d["text"] != "Here is the image you asked for." {
		t.Errorf("data = %v", d)
	}
	if b, err := os.ReadFile(dir + "/g1.png"); err != nil || string(b) != string(fakegemini.PNG) {
		t.Errorf("saved image %q, %v", b, err)
	}
	raw, _ := json.Marshal(d["raw_response"])
	if strings.Contains(string(raw), base64.StdEncoding.EncodeToString(fakegemini.PNG)) || !strings.Contains(string(raw), "saved as image_url") {
		t.Errorf("raw_response keeps the base64 image: %s", raw)
	}
	sent := fake.Requests()[0]
	want := map[string]any{"contents": []any{map[string]any{"parts": []any{map[string]any{"text": "a banana wearing sunglasses"}}}}}
	if !reflect.DeepEqual(sent, want) {
		t.Errorf("request = %v", sent)
	}
	if len(res.OutputFiles) != 1 || res.ServiceMetadata.ModelUsed != "gemini-2.5-flash-image-preview" {
		t.Errorf("result = %+v", res)
	}
}

// An inline_data.image_url is fetched and sent as base64, after the prompt, as the old
// connector did; a payload already in Gemini's shape goes as it is.
func TestImagesAndGeminiShapedPayloads(t *testing.T) {
	fake, c, _, base := setup(t, key, 3)
	_, err := run(c, `{"prompt":"make it blue","contents":[{"parts":[{"inline_data":{"image_url":"`+base+`/images/cat.jpg"}}]}]}`)
	if err != nil {
		t.Fatal(err)
	}
	parts := fake.Requests()[0]["contents"].([]any)[0].(map[string]any)["parts"].([]any)
	inline := parts[1].(map[string]any)["inlineData"].(map[string]any)
	if len(parts) != 2 || inline["mime_type"] != "image/jpeg" || inline["data"] != base64.StdEncoding.EncodeToString(fakegemini.JPEG) {
		t.Errorf("parts = %v", parts)
	}
	native := `{"contents":[{"role":"user","parts":[{"text":"draw"}]}],"generationConfig":{"responseModalities":["IMAGE"]}}`
	if _, err := run(c, native); err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	_ = json.Unmarshal([]byte(native), &want)
	if got := fake.Requests()[1]; !reflect.DeepEqual(got, want) {
		t.Errorf("native request = %v", got)
	}
	if _, err := run(c, `{"prompt":"x","contents":[{"parts":[{"inline_data":{"image_url":"`+base+`/images/missing.jpg"}}]}]}`); !job.IsPermanent(err) {
		t.Errorf("missing input image: %v", err)
	}
}

func TestRateLimitedRequestsAreRetried(t *testing.T) {
	fake, c, _, _ := setup(t, key, 3)
	fake.RateLimited = 2
	if _, err := run(c, `{"prompt":"x"}`); err != nil {
		t.Fatal(err)
	}
	if n := len(fake.Requests()); n != 3 {
		t.Errorf("requests = %d, want 2 refused and 1 served", n)
	}
}

// A failing API fails the attempts (retryable), then opens the breaker: the machine stops
// claiming gemini jobs until it closes.
func TestFailingAPIOpensTheBreaker(t *testing.T) {
	fake, c, _, _ := setup(t, key, 1)
	fake.ServerErrors = 100
	for i := 0; i < 3; i++ {
		if _, err := run(c, `{"prompt":"x"}`); err == nil || job.IsPermanent(err) {
			t.Fatalf("attempt %d: err = %v, want a retryable failure", i, err)
		}
	}
	if c.Available() {
		t.Fatal("the breaker is closed after 6 failed requests")
	}
	if _, err := run(c, `{"prompt":"x"}`); !errors.Is(err, remote.ErrUnavailable) && !strings.Contains(err.Error(), remote.ErrUnavailable.Error()) {
		t.Errorf("err = %v", err)
	}
}

func TestRefusalsAreClearAndPermanent(t *testing.T) {
	_, c, _, _ := setup(t, "AIzaSy-wrong-key-987654321", 3)
	_, err := run(c, `{"prompt":"x"}`)
	if !job.IsPermanent(err) || !strings.Contains(err.Error(), "API key not valid") || strings.Contains(err.Error(), "AIzaSy-wrong-key-987654321") {
		t.Errorf("bad key: %v", err)
	}
	fake, c, _, _ := setup(t, key, 3)
	fake.Blocked = true
	if _, err := run(c, `{"prompt":"x"}`); !job.IsPermanent(err) || !strings.Contains(err.Error(), "blocked the prompt (PROHIBITED_CONTENT)") {
		t.Errorf("blocked: %v", err)
	}
	fake.Blocked, fake.TextOnly = false, true
	if _, err := run(c, `{"prompt":"x"}`); err == nil || job.IsPermanent(err) || !strings.Contains(err.Error(), "no image") {
		t.Errorf("text only: %v", err)
	}
	if _, err := run(c, `{"size":"1024x1024"}`); !job.IsPermanent(err) || !strings.Contains(err.Error(), "no prompt") {
		t.Errorf("no prompt: %v", err)
	}
	if _, err := gemini.New(gemini.Settings{}).Run(context.Background(), &job.Job{ID: "x"}, func(job.Progress) {}); !job.IsPermanent(err) ||
		!strings.Contains(err.Error(), "GEMINI_API_KEY") {
		t.Errorf("no key: %v", err)
	}
}
