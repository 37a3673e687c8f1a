package runpod_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/connectors/runpod"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/internal/fakejobapis"
)

func setup(t testing.TB) (*fakejobapis.Jobs, *runpod.Connector) {
	fake := fakejobapis.New("rp_key_0123456789")
	srv := httptest.NewServer(fake.Handler())
	t.Cleanup(srv.Close)
	return fake, runpod.New(runpod.Settings{BaseURL: srv.URL + "/runpod/v2", APIKey: "rp_key_0123456789", EndpointID: "ep1",
		PollEvery: 5 * time.Millisecond, RatePerSec: 1000})
}

func run(c *runpod.Connector, ctx context.Context, payload string) (job.Result, error) {
	return c.Run(ctx, &job.Job{ID: "j", Service: "runpod", Payload: json.RawMessage(payload)}, func(job.Progress) {})
}

func TestRunThenStatus(t *testing.T) {
	fake, c := setup(t)
	res, err := run(c, context.Background(), `{"input":{"prompt":"x"}}`)
	if err != nil || res.Data.(map[string]any)["output"].(map[string]any)["text"] != "done" {
		t.Fatalf("run = %+v, %v", res, err)
	}
	if fake.Inputs[0]["input"].(map[string]any)["prompt"] != "x" {
		t.Errorf("sent %v", fake.Inputs)
	}
}

func TestFailedRun(t *testing.T) {
	fake, c := setup(t)
	fake.Fail = true
	if _, err := run(c, context.Background(), `{"input":{}}`); err == nil || !strings.Contains(err.Error(), "ValueError") {
		t.Fatalf("err = %v", err)
	}
}

func TestCancelSendsCancel(t *testing.T) {
	fake, c := setup(t)
	fake.Slow = true
	ctx, cancel := context.WithCancel(context.Background())
	go func() { // cancel once the remote job exists and is being followed
		for fake.Polls() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if _, err := run(c, ctx, `{"input":{}}`); err == nil {
		t.Fatal("a cancelled job succeeded")
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(fake.CancelledIDs()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(fake.CancelledIDs()) != 1 {
		t.Errorf("cancel requests: %v", fake.CancelledIDs())
	}
}

func TestNoInputIsPermanent(t *testing.T) {
	_, c := setup(t)
	if _, err := run(c, context.Background(), `{}`); !job.IsPermanent(err) {
		t.Fatalf("err = %v", err)
	}
}
