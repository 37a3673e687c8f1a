// Package ollama runs text generation, chat and embedding jobs on the Ollama daemon the machine
// supervises. Payloads use the old worker's field names (prompt or messages, model,
// system_prompt, temperature, top_k, top_p, max_tokens or num_predict, context_length or num_ctx,
// stop); generations are streamed, so progress follows the tokens as they come.
package ollama

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/job"
)

// Settings configure the connector.
type Settings struct {
	BaseURL      string        // the daemon, e.g. http://127.0.0.1:11434
	DefaultModel string        // OLLAMA_DEFAULT_MODEL: for jobs that name none
	Timeout      time.Duration // OLLAMA_TIMEOUT_SECONDS: one request to the daemon (default 300 s)
	Assets       assets.Saver  // where a job with a storage context gets its text saved; nil: not saved
}

// Connector runs jobs against one Ollama daemon. It is safe for concurrent use: the daemon
// serves the slots' requests in parallel (OLLAMA_NUM_PARALLEL).
type Connector struct {
	s    Settings
	http *http.Client
}

// New returns a connector.
func New(s Settings) *Connector {
	s.BaseURL = strings.TrimRight(s.BaseURL, "/")
	if s.DefaultModel == "" {
		s.DefaultModel = "llama3.2"
	}
	if s.Timeout <= 0 {
		s.Timeout = 5 * time.Minute
	}
	return &Connector{s: s, http: &http.Client{}}
}

// Operations a job can ask for, in the old worker's words (payload.job_type or operation).
const (
	opGenerate   = "generate"
	opChat       = "chat"
	opEmbeddings = "embeddings"
)

// payload is a job's payload with the old worker's field names.
type payload struct {
	JobType       string          `json:"job_type"`
	Operation     string          `json:"operation"`
	Prompt        string          `json:"prompt"`
	Text          string          `json:"text"`
	Input         json.RawMessage `json:"input"`
	Messages      []message       `json:"messages"`
	Model         string          `json:"model"`
	SystemPrompt  string          `json:"system_prompt"`
	System        string          `json:"system"`
	Temperature   *float64        `json:"temperature"`
	TopK          *int            `json:"top_k"`
	TopP          *float64        `json:"top_p"`
	MaxTokens     *int            `json:"max_tokens"`
	NumPredict    *int            `json:"num_predict"`
	ContextLength *int            `json:"context_length"`
	NumCtx        *int            `json:"num_ctx"`
	RepeatPenalty *float64        `json:"repeat_penalty"`
	Stop          json.RawMessage `json:"stop"` // a string or a list of strings
	Format        json.RawMessage `json:"format"`
	Images        []string        `json:"images"`
	KeepAlive     json.RawMessage `json:"keep_alive"`
}

type message struct {
	Role    string   `json:"role"`
	Content string   `json:"content"`
	Images  []string `json:"images,omitempty"`
}

// operation is what the job asks for: its job_type or operation, else what its service says
// (text_generation, chat_completion, embeddings), else chat when it brings messages only.
func (p *payload) operation(service string) (string, error) {
	op := p.JobType
	if op == "" {
		op = p.Operation
	}
	if op == "" {
		switch service {
		case "chat_completion":
			op = opChat
		case "embeddings":
			op = opEmbeddings
		default:
			op = opGenerate
			if p.Prompt == "" && len(p.Messages) > 0 {
				op = opChat
			}
		}
	}
	switch op {
	case "generate", "text_generation":
		return opGenerate, nil
	case "chat", "chat_completion":
		return opChat, nil
	case "embeddings", "embed", "embedding":
		return opEmbeddings, nil
	}
	return "", fmt.Errorf("job_type %q is not an Ollama operation; use generate, chat or embeddings", op)
}

// options are Ollama's model options from the old field names; num_predict is 0 when unset.
func (p *payload) options() (map[string]any, int, error) {
	o := map[string]any{}
	set := func(k string, v any, ok bool) {
		if ok {
			o[k] = v
		}
	}
	set("temperature", deref(p.Temperature), p.Temperature != nil)
	set("top_k", deref(p.TopK), p.TopK != nil)
	set("top_p", deref(p.TopP), p.TopP != nil)
	set("repeat_penalty", deref(p.RepeatPenalty), p.RepeatPenalty != nil)
	predict := first(p.MaxTokens, p.NumPredict)
	set("num_predict", deref(predict), predict != nil)
	ctx := first(p.ContextLength, p.NumCtx)
	set("num_ctx", deref(ctx), ctx != nil)
	if len(p.Stop) > 0 && string(p.Stop) != "null" {
		var one string
		var many []string
		switch {
		case json.Unmarshal(p.Stop, &one) == nil:
			o["stop"] = []string{one}
		case json.Unmarshal(p.Stop, &many) == nil:
			o["stop"] = many
		default:
			return nil, 0, errors.New("stop must be a string or a list of strings")
		}
	}
	n := 0
	if predict != nil && *predict > 0 {
		n = *predict
	}
	return o, n, nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func first(a, b *int) *int {
	if a != nil {
		return a
	}
	return b
}

// Run implements connectors.Connector.
func (c *Connector) Run(ctx context.Context, j *job.Job, progress job.ProgressFunc) (job.Result, error) {
	start := time.Now()
	var p payload
	if err := connectors.DecodePayload(j, &p); err != nil {
		return job.Result{}, err
	}
	op, err := p.operation(j.Service)
	if err != nil {
		return job.Result{}, job.Permanent(fmt.Errorf("ollama job %s: %w", j.ID, err))
	}
	model := p.Model
	if model == "" {
		model = c.s.DefaultModel
	}
	progress(job.Progress{Percent: 10, Message: fmt.Sprintf("starting %s with %s", op, model)})
	ctx, cancel := context.WithTimeout(ctx, c.s.Timeout)
	defer cancel()
	var data map[string]any
	var meta map[string]any
	switch op {
	case opEmbeddings:
		data, meta, err = c.embed(ctx, j, &p, model)
	default:
		data, meta, err = c.generate(ctx, j, &p, op, model, progress)
	}
	if err != nil {
		return job.Result{}, err
	}
	if text, _ := data["text"].(string); text != "" && c.s.Assets != nil && len(j.Ctx) > 0 {
		// Like the old worker, a job with a storage context gets its text saved too; a failed
		// save does not fail the job.
		if saved, err := c.s.Assets.Save(ctx, j.ID, j.Ctx, ".txt", []byte(strings.TrimSpace(text))); err != nil {
			meta["saved_asset_error"] = err.Error()
		} else {
			meta["saved_asset"] = map[string]any{"url": saved.URL, "size": saved.Size, "mime_type": "text/plain"}
		}
	}
	progress(job.Progress{Percent: 100, Message: "completed"})
	return job.Result{Success: true, Data: data, Metadata: meta, ProcessingTimeMS: time.Since(start).Milliseconds(),
		ServiceMetadata: &job.ServiceMetadata{ServiceVersion: "ollama", ServiceType: "ollama", ModelUsed: model}}, nil
}

// chunk is one line of a streamed generation (and the whole answer of a non-streamed one).
type chunk struct {
	Model           string  `json:"model"`
	Response        string  `json:"response"`
	Message         message `json:"message"`
	Done            bool    `json:"done"`
	DoneReason      string  `json:"done_reason"`
	Context         []int   `json:"context"`
	TotalDuration   int64   `json:"total_duration"`
	LoadDuration    int64   `json:"load_duration"`
	PromptEvalCount int     `json:"prompt_eval_count"`
	PromptEvalDur   int64   `json:"prompt_eval_duration"`
	EvalCount       int     `json:"eval_count"`
	EvalDuration    int64   `json:"eval_duration"`
	Error           string  `json:"error"`
}

func (c *Connector) generate(ctx context.Context, j *job.Job, p *payload, op, model string, progress job.ProgressFunc) (map[string]any, map[string]any, error) {
	options, limit, err := p.options()
	if err != nil {
		return nil, nil, job.Permanent(fmt.Errorf("ollama job %s: %w", j.ID, err))
	}
	system := p.SystemPrompt
	if system == "" {
		system = p.System
	}
	req := map[string]any{"model": model, "stream": true, "options": options}
	for k, v := range map[string]json.RawMessage{"format": p.Format, "keep_alive": p.KeepAlive} {
		if len(v) > 0 && string(v) != "null" {
			req[k] = v
		}
	}
	path := "/api/generate"
	if op == opChat {
		path = "/api/chat"
		msgs := p.Messages
		if len(msgs) == 0 {
			if p.Prompt == "" {
				return nil, nil, job.Permanent(fmt.Errorf("ollama chat job %s has neither messages nor prompt; send one of them", j.ID))
			}
			msgs = []message{{Role: "user", Content: p.Prompt, Images: p.Images}}
			if system != "" {
				msgs = append([]message{{Role: "system", Content: system}}, msgs...)
			}
		}
		req["messages"] = msgs
	} else {
		if p.Prompt == "" {
			return nil, nil, job.Permanent(fmt.Errorf("ollama generate job %s has no prompt; send a prompt (or messages with job_type chat)", j.ID))
		}
		req["prompt"] = p.Prompt
		if system != "" {
			req["system"] = system
		}
		if len(p.Images) > 0 {
			req["images"] = p.Images
		}
	}
	resp, err := c.post(ctx, path, req, model)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()

	var text strings.Builder
	var last chunk
	tokens := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var ch chunk
		if err := json.Unmarshal(line, &ch); err != nil {
			return nil, nil, fmt.Errorf("ollama answered %s with a line that is not JSON (%v)", path, err)
		}
		if ch.Error != "" {
			return nil, nil, fmt.Errorf("ollama stopped generating for job %s: %s", j.ID, ch.Error)
		}
		piece := ch.Response
		if op == opChat {
			piece = ch.Message.Content
		}
		if piece != "" {
			text.WriteString(piece)
			tokens++
			progress(tokenProgress(tokens, limit))
		}
		if ch.Done {
			last = ch
			break
		}
	}
	if err := sc.Err(); err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, fmt.Errorf("ollama stream for job %s broke off: %w", j.ID, err)
	}
	if !last.Done {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, fmt.Errorf("ollama stream for job %s ended before the generation was done", j.ID)
	}
	used := last.Model
	if used == "" {
		used = model
	}
	data := map[string]any{"text": text.String(), "model_used": used}
	service := "ollama"
	if op == opChat {
		data["message"] = message{Role: "assistant", Content: text.String()}
		service = "ollama_chat"
	} else if last.Context != nil {
		data["context"] = last.Context
	}
	meta := map[string]any{
		"model": used, "service": service, "done_reason": last.DoneReason,
		"tokens": map[string]int{"prompt_tokens": last.PromptEvalCount, "completion_tokens": last.EvalCount,
			"total_tokens": last.PromptEvalCount + last.EvalCount},
		"timing": map[string]int64{"total_duration": last.TotalDuration, "load_duration": last.LoadDuration,
			"prompt_eval_duration": last.PromptEvalDur, "eval_duration": last.EvalDuration},
	}
	return data, meta, nil
}

// tokenProgress maps streamed tokens to 10..95 %: against num_predict when the job set it,
// else on a curve that keeps rising without reaching the end.
func tokenProgress(tokens, limit int) job.Progress {
	pct := 10 + 85*float64(tokens)/float64(tokens+64)
	if limit > 0 {
		pct = 10 + 85*min(1, float64(tokens)/float64(limit))
	}
	return job.Progress{Percent: pct, Message: fmt.Sprintf("generated %d tokens", tokens), Step: tokens, TotalSteps: limit}
}

func (c *Connector) embed(ctx context.Context, j *job.Job, p *payload, model string) (map[string]any, map[string]any, error) {
	var input any
	var list []string
	var one string
	switch {
	case len(p.Input) > 0 && json.Unmarshal(p.Input, &list) == nil && len(list) > 0:
		input = list
	case len(p.Input) > 0 && json.Unmarshal(p.Input, &one) == nil && one != "":
		input = one
	case p.Prompt != "":
		input = p.Prompt
	case p.Text != "":
		input = p.Text
	default:
		return nil, nil, job.Permanent(fmt.Errorf("ollama embeddings job %s has no prompt, text or input; send the text to embed", j.ID))
	}
	resp, err := c.post(ctx, "/api/embed", map[string]any{"model": model, "input": input}, model)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Embeddings [][]float64 `json:"embeddings"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&out); err != nil {
		return nil, nil, fmt.Errorf("ollama answered /api/embed with malformed JSON (%v)", err)
	}
	if len(out.Embeddings) == 0 {
		return nil, nil, fmt.Errorf("ollama returned no embeddings for job %s", j.ID)
	}
	// One text gives one vector, as the old worker returned it; a list gives a list of vectors.
	var vectors any = out.Embeddings
	if _, single := input.(string); single {
		vectors = out.Embeddings[0]
	}
	data := map[string]any{"embeddings": vectors, "model_used": model, "dimensions": len(out.Embeddings[0])}
	return data, map[string]any{"model": model, "service": "ollama_embeddings", "embedding_dimensions": len(out.Embeddings[0])}, nil
}

// post sends a request to the daemon. A model the daemon does not have, or a request it
// refuses, fails the job for good; an unreachable or failing daemon is worth a retry.
func (c *Connector) post(ctx context.Context, path string, body any, model string) (*http.Response, error) {
	raw, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.s.BaseURL+path, bytes.NewReader(raw))
	if err != nil {
		return nil, job.Permanent(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("ollama at %s does not answer (%w); the machine restarts it, and the job is retried", c.s.BaseURL, err)
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	var e struct {
		Error string `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(b))
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, job.Permanent(fmt.Errorf("model %q is not pulled on this machine (%s); add it to OLLAMA_DEFAULT_MODELS or send a model the machine has", model, e.Error))
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		return nil, job.Permanent(fmt.Errorf("ollama refused the request (%s): %s", resp.Status, e.Error))
	}
	return nil, fmt.Errorf("ollama failed (%s): %s", resp.Status, e.Error)
}
