package ollama_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/connectors/ollama"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/internal/fakeollama"
)

func setup(t *testing.T, models ...string) (*fakeollama.Server, *ollama.Connector, string) {
	t.Helper()
	fake := fakeollama.New("", models...)
	srv := httptest.NewServer(fake.Handler())
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	return fake, ollama.New(ollama.Settings{BaseURL: srv.URL, DefaultModel: "llama3.2", Assets: assets.Store{Dir: dir}}), dir
}

type recorder struct {
	mu  sync.Mutex
	got []job.Progress
}

func (r *recorder) add(p job.Progress) { r.mu.Lock(); r.got = append(r.got, p); r.mu.Unlock() }

func run(c *ollama.Connector, ctx context.Context, service, payload string, rec *recorder) (job.Result, error) {
	if rec == nil {
		rec = &recorder{}
	}
	return c.Run(ctx, &job.Job{ID: "j1", Service: service, Payload: json.RawMessage(payload)}, rec.add)
}

// The old worker's field names reach Ollama as its options, and the streamed tokens drive the
// progress reports.
func TestGenerateMapsTheOldFieldsAndStreamsProgress(t *testing.T) {
	fake, c, _ := setup(t, "llama3.2", "qwen3:0.6b")
	rec := &recorder{}
	res, err := run(c, context.Background(), "text_generation", `{"prompt":"the quick brown fox jumps","model":"qwen3:0.6b",
		"system_prompt":"be brief","temperature":0.2,"top_k":40,"top_p":0.9,"max_tokens":4,"context_length":2048,"stop":"jumps"}`, rec)
	if err != nil {
		t.Fatal(err)
	}
	data := res.Data.(map[string]any)
	if data["text"] != "echo: the quick brown" || data["model_used"] != "qwen3:0.6b" {
		t.Errorf("data = %v", data)
	}
	sent := fake.Requests("/api/generate")[0]
	opts := sent["options"].(map[string]any)
	want := map[string]any{"temperature": 0.2, "top_k": 40.0, "top_p": 0.9, "num_predict": 4.0, "num_ctx": 2048.0, "stop": []any{"jumps"}}
	for k, v := range want {
		if b1, _ := json.Marshal(opts[k]); string(b1) != mustJSON(v) {
			t.Errorf("options.%s = %v, want %v", k, opts[k], v)
		}
	}
	if sent["system"] != "be brief" || sent["stream"] != true {
		t.Errorf("request = %v", sent)
	}
	var steps []int
	for _, p := range rec.got {
		if p.Step > 0 {
			steps = append(steps, p.Step)
		}
	}
	if !slices.Equal(steps, []int{1, 2, 3, 4}) {
		t.Errorf("token progress steps = %v, want one report per token", steps)
	}
	for i := 1; i < len(rec.got); i++ {
		if rec.got[i].Percent < rec.got[i-1].Percent {
			t.Errorf("progress went back: %v", rec.got)
		}
	}
	tokens := res.Metadata["tokens"].(map[string]int)
	if tokens["completion_tokens"] != 4 || res.Metadata["done_reason"] != "length" {
		t.Errorf("metadata = %v", res.Metadata)
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// A chat_completion job with a prompt becomes a chat with the system prompt first; the
// default model applies.
func TestChatFromPromptAndSystem(t *testing.T) {
	fake, c, _ := setup(t, "llama3.2")
	res, err := run(c, context.Background(), "chat_completion", `{"prompt":"hello there","system":"you are terse"}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	sent := fake.Requests("/api/chat")[0]
	msgs := sent["messages"].([]any)
	if len(msgs) != 2 || msgs[0].(map[string]any)["role"] != "system" || msgs[1].(map[string]any)["content"] != "hello there" || sent["model"] != "llama3.2" {
		t.Errorf("chat request = %v", sent)
	}
	data := res.Data.(map[string]any)
	if data["text"] != "echo: hello there" {
		t.Errorf("data = %v", data)
	}
	b, _ := json.Marshal(data["message"])
	if string(b) != `{"role":"assistant","content":"echo: hello there"}` {
		t.Errorf("message = %s", b)
	}
}

func TestChatWithMessagesOnTheOllamaService(t *testing.T) {
	fake, c, _ := setup(t, "llama3.2")
	_, err := run(c, context.Background(), "ollama", `{"messages":[{"role":"user","content":"one"},{"role":"assistant","content":"x"},{"role":"user","content":"two"}]}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(fake.Requests("/api/chat")) != 1 || len(fake.Requests("/api/generate")) != 0 {
		t.Error("a job with messages only did not go to /api/chat")
	}
}

func TestEmbeddings(t *testing.T) {
	fake, c, _ := setup(t, "nomic-embed-text")
	res, err := run(c, context.Background(), "embeddings", `{"model":"nomic-embed-text","text":"hello"}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := res.Data.(map[string]any)
	if vec, ok := d["embeddings"].([]float64); !ok || len(vec) != 8 || vec[0] != fakeollama.Vector("hello")[0] || d["dimensions"] != 8 {
		t.Errorf("single-text embedding = %v", d)
	}
	res, err = run(c, context.Background(), "ollama", `{"job_type":"embeddings","model":"nomic-embed-text","input":["a","b"]}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if vecs, ok := res.Data.(map[string]any)["embeddings"].([][]float64); !ok || len(vecs) != 2 {
		t.Errorf("list embedding = %v", res.Data)
	}
	if got := fake.Requests("/api/embed"); len(got) != 2 || got[0]["input"] != "hello" {
		t.Errorf("embed requests = %v", got)
	}
}

func TestModelNotPulledFailsForGood(t *testing.T) {
	_, c, _ := setup(t, "llama3.2")
	_, err := run(c, context.Background(), "text_generation", `{"prompt":"hi","model":"mistral"}`, nil)
	if !job.IsPermanent(err) || !strings.Contains(err.Error(), `model "mistral" is not pulled on this machine`) ||
		!strings.Contains(err.Error(), "OLLAMA_DEFAULT_MODELS") {
		t.Fatalf("err = %v", err)
	}
}

func TestBadPayloadsFailForGood(t *testing.T) {
	_, c, _ := setup(t, "llama3.2")
	for _, p := range []string{`{"job_type":"translate","prompt":"x"}`, `{"prompt":""}`, `{"prompt":"x","stop":42}`, `{"prompt":7}`} {
		if _, err := run(c, context.Background(), "ollama", p, nil); !job.IsPermanent(err) {
			t.Errorf("%s: err = %v, want a permanent failure", p, err)
		}
	}
	if _, err := run(c, context.Background(), "embeddings", `{}`, nil); !job.IsPermanent(err) {
		t.Errorf("empty embeddings job: err = %v", err)
	}
}

// A daemon that fails, or breaks off mid-stream, is worth a retry.
func TestDaemonFailuresAreRetryable(t *testing.T) {
	fake, c, _ := setup(t, "llama3.2")
	fake.FailNext = true
	_, err := run(c, context.Background(), "ollama", `{"prompt":"a b c"}`, nil)
	if err == nil || job.IsPermanent(err) || !strings.Contains(err.Error(), "llama runner process has terminated") {
		t.Errorf("500: err = %v", err)
	}
	fake.FailMidStream = true
	_, err = run(c, context.Background(), "ollama", `{"prompt":"a b c d"}`, nil)
	if err == nil || job.IsPermanent(err) || !strings.Contains(err.Error(), "unexpected EOF") {
		t.Errorf("mid-stream: err = %v", err)
	}
	gone := ollama.New(ollama.Settings{BaseURL: "http://127.0.0.1:1"})
	if _, err := run(gone, context.Background(), "ollama", `{"prompt":"x"}`, nil); err == nil || job.IsPermanent(err) {
		t.Errorf("unreachable daemon: err = %v", err)
	}
}

// Cancelling the job closes the stream: the daemon sees its client leave.
func TestCancelStopsTheGeneration(t *testing.T) {
	fake, c, _ := setup(t, "llama3.2")
	fake.Hold = make(chan struct{})
	defer close(fake.Hold)
	ctx, cancel := context.WithCancel(context.Background())
	rec := &recorder{}
	done := make(chan error, 1)
	go func() {
		_, err := run(c, ctx, "ollama", `{"prompt":"a long answer"}`, rec)
		done <- err
	}()
	for { // the first token has arrived: the generation is under way
		rec.mu.Lock()
		n := len(rec.got)
		rec.mu.Unlock()
		if n >= 2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	for fake.Aborted() == 0 {
		time.Sleep(time.Millisecond)
	}
}

func TestTextIsSavedForJobsWithAStorageContext(t *testing.T) {
	_, c, dir := setup(t, "llama3.2")
	res, err := c.Run(context.Background(), &job.Job{ID: "j7", Service: "ollama", Payload: json.RawMessage(`{"prompt":"keep me"}`),
		Ctx: json.RawMessage(`{"prefix":"out"}`)}, func(job.Progress) {})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "out", "j7.txt"))
	if err != nil || string(b) != "echo: keep me" || res.Metadata["saved_asset"] == nil {
		t.Errorf("saved %q (%v), metadata %v", b, err, res.Metadata)
	}
}
