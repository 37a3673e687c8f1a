package replicate_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/connectors/replicate"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/internal/fakejobapis"
)

func setup(t testing.TB, token string) (*fakejobapis.Jobs, *replicate.Connector, string) {
	fake := fakejobapis.New("r8_secret_token_value")
	srv := httptest.NewServer(fake.Handler())
	t.Cleanup(srv.Close)
	fake.SetBase(srv.URL)
	dir := t.TempDir()
	return fake, replicate.New(replicate.Settings{BaseURL: srv.URL + "/replicate/v1", Token: token, PollEvery: 5 * time.Millisecond,
		RatePerSec: 1000, Assets: assets.Store{Dir: dir}}), dir
}

func run(c *replicate.Connector, ctx context.Context, payload string) (job.Result, error) {
	return c.Run(ctx, &job.Job{ID: "j9", Service: "replicate", Payload: json.RawMessage(payload)}, func(job.Progress) {})
}

func TestPredictionByModelSavesOutputs(t *testing.T) {
	fake, c, dir := setup(t, "r8_secret_token_value")
	res, err := run(c, context.Background(), `{"model":"black-forest-labs/flux-schnell","input":{"prompt":"a fox"}}`)
	if err != nil {
		t.Fatal(err)
	}
	d := res.Data.(map[string]any)
	if !strings.HasPrefix(d["image_url"].(string), "file://") || d["mime_type"] != "image/png" || len(res.OutputFiles) != 2 {
		t.Errorf("result = %+v", res)
	}
	if b, err := os.ReadFile(dir + "/j9.png"); err != nil || !strings.HasPrefix(string(b), "\x89PNG") {
		t.Errorf("saved output: %q %v", b, err)
	}
	if in := fake.Inputs[0]["input"].(map[string]any); in["prompt"] != "a fox" {
		t.Errorf("sent %v", fake.Inputs[0])
	}
}

func TestFailedPrediction(t *testing.T) {
	fake, c, _ := setup(t, "r8_secret_token_value")
	fake.Fail = true
	_, err := run(c, context.Background(), `{"version":"abc123","input":{}}`)
	if err == nil || !strings.Contains(err.Error(), "out of memory") {
		t.Fatalf("err = %v", err)
	}
}

func TestCancelCancelsThePrediction(t *testing.T) {
	fake, c, _ := setup(t, "r8_secret_token_value")
	fake.Slow = true
	ctx, cancel := context.WithCancel(context.Background())
	go func() { // cancel once the remote job exists and is being followed
		for fake.Polls() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if _, err := run(c, ctx, `{"version":"abc123","input":{}}`); err == nil {
		t.Fatal("a cancelled job succeeded")
	}
	if ids := fake.CancelledIDs(); len(ids) != 1 {
		t.Errorf("cancel requests: %v", ids)
	}
}

func TestBadTokenIsPermanentAndHidden(t *testing.T) {
	_, c, _ := setup(t, "r8_wrong_token_value")
	_, err := run(c, context.Background(), `{"version":"abc123","input":{}}`)
	if !job.IsPermanent(err) || strings.Contains(err.Error(), "r8_wrong_token_value") {
		t.Fatalf("err = %v", err)
	}
}

func TestNeitherVersionNorModel(t *testing.T) {
	_, c, _ := setup(t, "r8_secret_token_value")
	if _, err := run(c, context.Background(), `{"input":{}}`); !job.IsPermanent(err) {
		t.Fatalf("err = %v", err)
	}
}
