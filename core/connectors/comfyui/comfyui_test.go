package comfyui_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/connectors/comfyui"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/internal/fakecomfy"
)

const workflow = `{"3":{"class_type":"KSampler","inputs":{"seed":1}},"9":{"class_type":"SaveImage","inputs":{}}}`

func run(t testing.TB, b fakecomfy.Behaviour, payload string, s comfyui.Settings) (job.Result, []job.Progress, *fakecomfy.Server, error) {
	t.Helper()
	fake := fakecomfy.New()
	fake.Behaviour = b
	srv := httptest.NewServer(fake.Handler())
	t.Cleanup(srv.Close)
	s.BaseURL = srv.URL
	var got []job.Progress
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := comfyui.New(s).Run(ctx, &job.Job{ID: "j1", Service: "comfyui", Payload: json.RawMessage(payload)},
		func(p job.Progress) { got = append(got, p) })
	return res, got, fake, err
}

func TestPromptProgressAndOutputs(t *testing.T) {
	res, progress, fake, err := run(t, fakecomfy.Behaviour{Steps: 4}, `{"workflow":`+workflow+`}`, comfyui.Settings{})
	if err != nil || !res.Success {
		t.Fatalf("run = %+v, %v", res, err)
	}
	prompts := fake.Prompts()
	if len(prompts) != 1 || prompts[0]["client_id"] == "" || prompts[0]["prompt"].(map[string]any)["3"] == nil {
		t.Fatalf("POST /prompt bodies: %v", prompts)
	}
	if len(progress) < 5 || progress[len(progress)-1].Percent != 95 || progress[len(progress)-1].TotalSteps != 4 {
		t.Errorf("progress = %+v", progress)
	}
	data := res.Data.(map[string]any)
	if data["prompt_id"] != "prompt-1" || !strings.Contains(data["image_url"].(string), "/view?filename=ComfyUI_00001_.png") ||
		data["mime_type"] != "image/png" || len(res.OutputFiles) != 1 {
		t.Errorf("result data = %v", data)
	}
}

func TestRejectedWorkflowIsPermanent(t *testing.T) {
	_, _, _, err := run(t, fakecomfy.Behaviour{Reject: true}, workflow, comfyui.Settings{})
	if !job.IsPermanent(err) || !strings.Contains(err.Error(), "missing.safetensors") {
		t.Fatalf("err = %v; want a permanent error naming the bad input", err)
	}
}

func TestServerErrorIsRetryable(t *testing.T) {
	_, _, _, err := run(t, fakecomfy.Behaviour{ServerError: true}, workflow, comfyui.Settings{})
	if err == nil || job.IsPermanent(err) || !strings.Contains(err.Error(), "500") {
		t.Fatalf("err = %v", err)
	}
}

func TestNotAWorkflowIsPermanent(t *testing.T) {
	_, _, fake, err := run(t, fakecomfy.Behaviour{}, `[1,2]`, comfyui.Settings{})
	if !job.IsPermanent(err) || len(fake.Prompts()) != 0 {
		t.Fatalf("err = %v, prompts sent %d", err, len(fake.Prompts()))
	}
}

// A websocket that says nothing: the history shows the completion, so it is not missed.
func TestSilentWebsocketReconciledThroughHistory(t *testing.T) {
	res, _, _, err := run(t, fakecomfy.Behaviour{Silent: true, Steps: 2}, workflow, comfyui.Settings{Inactivity: 100 * time.Millisecond})
	if err != nil || !res.Success {
		t.Fatalf("run = %+v, %v", res, err)
	}
}

func TestExecutionErrorIsReported(t *testing.T) {
	_, _, _, err := run(t, fakecomfy.Behaviour{FailWith: "CUDA out of memory"}, workflow, comfyui.Settings{})
	if err == nil || job.IsPermanent(err) || !strings.Contains(err.Error(), "CUDA out of memory") || !strings.Contains(err.Error(), "KSampler") {
		t.Fatalf("err = %v", err)
	}
}

func TestServerGoneMidPrompt(t *testing.T) {
	_, _, _, err := run(t, fakecomfy.Behaviour{Vanish: true}, workflow, comfyui.Settings{Inactivity: 200 * time.Millisecond})
	if !errors.Is(err, comfyui.ErrGone) || job.IsPermanent(err) {
		t.Fatalf("err = %v; want a retryable ErrGone", err)
	}
}

func TestCancelInterruptsThePrompt(t *testing.T) {
	fake := fakecomfy.New()
	fake.Behaviour = fakecomfy.Behaviour{Steps: 100, StepEvery: 50 * time.Millisecond}
	srv := httptest.NewServer(fake.Handler())
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	_, err := comfyui.New(comfyui.Settings{BaseURL: srv.URL}).Run(ctx, &job.Job{ID: "j", Payload: json.RawMessage(workflow)}, func(job.Progress) {})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if fake.Interrupts() != 1 {
		t.Errorf("interrupts sent: %d", fake.Interrupts())
	}
}

func TestServiceNotUp(t *testing.T) {
	_, err := comfyui.New(comfyui.Settings{BaseURL: "http://127.0.0.1:1"}).Run(context.Background(),
		&job.Job{ID: "j", Payload: json.RawMessage(workflow)}, func(job.Progress) {})
	if err == nil || job.IsPermanent(err) || !strings.Contains(err.Error(), "does not answer") {
		t.Fatalf("err = %v", err)
	}
}

func TestOutputsCopiedToTheAssetStore(t *testing.T) {
	store := &assets.Store{Dir: t.TempDir(), BaseURL: "https://cdn.example.com"}
	res, _, _, err := run(t, fakecomfy.Behaviour{Steps: 1}, workflow, comfyui.Settings{Assets: store})
	if err != nil {
		t.Fatal(err)
	}
	d := res.Data.(map[string]any)
	if d["image_url"] != "https://cdn.example.com/j1.png" || res.OutputFiles[0].Path != d["image_url"] {
		t.Errorf("data = %v, files = %+v", d, res.OutputFiles)
	}
	if b, err := os.ReadFile(store.Dir + "/j1.png"); err != nil || !strings.Contains(string(b), "ComfyUI_00001_.png") {
		t.Errorf("stored output = %q, %v", b, err)
	}
}
