// Package openai runs openai_text (chat completions), openai_image (image generation, the image
// saved as an asset) and openai_responses (a background response, then polling) jobs against
// the OpenAI API or any server that speaks it (OPENAI_BASE_URL).
package openai

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/connectors/remote"
	"github.com/emp-job-queue/machine/core/job"
)

// Settings configure the connector. The key is never logged or shown in an error.
type Settings struct {
	BaseURL      string // default https://api.openai.com/v1
	APIKey       string
	TextModel    string // default gpt-4o-mini
	ImageModel   string // default gpt-image-1
	RespModel    string // default gpt-4.1
	PollEvery    time.Duration
	Timeout      time.Duration
	RatePerSec   float64
	Assets       assets.Saver
	MaxPollTotal time.Duration   // a background response that takes longer fails (default 10 min)
	Throttle     remote.Observer // hears 429s, the breaker and failed requests (nil: nobody)
}

// Connector runs OpenAI jobs.
type Connector struct {
	s      Settings
	client *remote.Client
}

// New returns a connector.
func New(s Settings) *Connector {
	if s.BaseURL == "" {
		s.BaseURL = "https://api.openai.com/v1"
	}
	s.BaseURL = strings.TrimRight(s.BaseURL, "/")
	if s.TextModel == "" {
		s.TextModel = "gpt-4o-mini"
	}
	if s.ImageModel == "" {
		s.ImageModel = "gpt-image-1"
	}
	if s.RespModel == "" {
		s.RespModel = "gpt-4.1"
	}
	if s.PollEvery <= 0 {
		s.PollEvery = 2 * time.Second
	}
	if s.MaxPollTotal <= 0 {
		s.MaxPollTotal = 10 * time.Minute
	}
	return &Connector{s: s, client: remote.New(remote.Options{Name: "OpenAI", RatePerSecond: s.RatePerSec,
		Timeout: s.Timeout, Secrets: []string{s.APIKey}, Observer: s.Throttle})}
}

// Available implements connectors.Availability: false while OpenAI keeps failing.
func (c *Connector) Available() bool { return c.client.Available() }

// Run implements connectors.Connector.
func (c *Connector) Run(ctx context.Context, j *job.Job, progress job.ProgressFunc) (job.Result, error) {
	if c.s.APIKey == "" {
		return job.Result{}, job.Permanent(fmt.Errorf("OPENAI_API_KEY (or OPENAI_API_KEY_FILE) is not set on this machine"))
	}
	start := time.Now()
	var data, usage map[string]any
	var err error
	switch j.Service {
	case ServiceText:
		data, usage, err = c.text(ctx, j)
	case ServiceImage:
		data, usage, err = c.image(ctx, j)
	case ServiceImg2Img:
		data, usage, err = c.img2img(ctx, j)
	case ServiceResponses:
		data, usage, err = c.responses(ctx, j, progress)
	default:
		return job.Result{}, job.Permanent(fmt.Errorf("service %s is not supported by the openai connector of this version (it runs %s)", j.Service, strings.Join(services, ", ")))
	}
	if err != nil {
		return job.Result{}, err
	}
	progress(job.Progress{Percent: 100, Message: "done"})
	return job.Result{Success: true, Data: data, ProcessingTimeMS: time.Since(start).Milliseconds(),
		ServiceMetadata: &job.ServiceMetadata{ServiceVersion: "openai-v1", ServiceType: j.Service, ModelUsed: fmt.Sprint(data["model"])},
		APIUsage:        usage}, nil
}

func (c *Connector) call(ctx context.Context, method, path string, body any, out any) error {
	return c.client.JSON(ctx, method, c.s.BaseURL+path, c.s.APIKey, body, out)
}

type textPayload struct {
	Prompt       string           `json:"prompt"`
	Messages     []map[string]any `json:"messages"`
	Model        string           `json:"model"`
	MaxTokens    int              `json:"max_tokens"`
	Temperature  *float64         `json:"temperature"`
	SystemPrompt string           `json:"system_prompt"`
}

// text, image, img2img and responses return the result's data and the usage OpenAI reported (nil when
// it reported none), which goes to the job's resource record.
func (c *Connector) text(ctx context.Context, j *job.Job) (map[string]any, map[string]any, error) {
	var p textPayload
	if err := connectors.DecodePayload(j, &p); err != nil {
		return nil, nil, err
	}
	msgs := p.Messages
	if len(msgs) == 0 {
		if p.Prompt == "" {
			return nil, nil, job.Permanent(fmt.Errorf("openai_text job %s has neither prompt nor messages", j.ID))
		}
		if p.SystemPrompt != "" {
			msgs = append(msgs, map[string]any{"role": "system", "content": p.SystemPrompt})
		}
		msgs = append(msgs, map[string]any{"role": "user", "content": p.Prompt})
	}
	model := p.Model
	if model == "" {
		model = c.s.TextModel
	}
	req := map[string]any{"model": model, "messages": msgs}
	if p.MaxTokens > 0 {
		req["max_tokens"] = p.MaxTokens
	}
	if p.Temperature != nil {
		req["temperature"] = *p.Temperature
	}
	var out struct {
		Model   string `json:"model"`
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
		Usage map[string]any `json:"usage"`
	}
	if err := c.call(ctx, http.MethodPost, "/chat/completions", req, &out); err != nil {
		return nil, nil, err
	}
	if len(out.Choices) == 0 {
		return nil, nil, fmt.Errorf("OpenAI returned no choices")
	}
	return map[string]any{"text": out.Choices[0].Message.Content, "model": out.Model, "usage": out.Usage}, out.Usage, nil
}

func (c *Connector) image(ctx context.Context, j *job.Job) (map[string]any, map[string]any, error) {
	var p struct {
		Prompt      string `json:"prompt"`
		Description string `json:"description"`
		Model       string `json:"model"`
		Size        string `json:"size"`
		Quality     string `json:"quality"`
	}
	if err := connectors.DecodePayload(j, &p); err != nil {
		return nil, nil, err
	}
	prompt := p.Prompt
	if prompt == "" {
		prompt = p.Description
	}
	if prompt == "" {
		return nil, nil, job.Permanent(fmt.Errorf("openai_image job %s has no prompt", j.ID))
	}
	model, size := p.Model, p.Size
	if model == "" {
		model = c.s.ImageModel
	}
	if size == "" {
		size = "1024x1024"
	}
	req := map[string]any{"model": model, "prompt": prompt, "size": size, "n": 1}
	if p.Quality != "" {
		req["quality"] = p.Quality
	}
	var out struct {
		Data []struct {
			B64 string `json:"b64_json"`
		} `json:"data"`
		Usage map[string]any `json:"usage"` // gpt-image-1 reports tokens
	}
	if err := c.call(ctx, http.MethodPost, "/images/generations", req, &out); err != nil {
		return nil, nil, err
	}
	if len(out.Data) == 0 || out.Data[0].B64 == "" {
		return nil, nil, fmt.Errorf("OpenAI returned no image")
	}
	saved, err := c.savePNG(ctx, j, out.Data[0].B64, "image")
	if err != nil {
		return nil, nil, err
	}
	return map[string]any{"image_url": saved.URL, "mime_type": saved.MimeType, "content_type": "image", "model": model,
		"size_bytes": saved.Size}, out.Usage, nil
}

// savePNG decodes an image OpenAI returned in base64 (what: "image", "edited image") and stores
// it where the job's ctx.storage says, timed as the job's upload.
func (c *Connector) savePNG(ctx context.Context, j *job.Job, b64, what string) (assets.Saved, error) {
	png, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return assets.Saved{}, fmt.Errorf("OpenAI's %s is not valid base64: %w", what, err)
	}
	end := job.Mark(ctx, job.PhaseUpload)
	defer end()
	return c.s.Assets.Save(ctx, j.ID, j.Ctx, ".png", png)
}

// emPropsKeys are payload keys of the EmProps platform that must not reach OpenAI.
var emPropsKeys = []string{"ctx", "bucket", "prefix", "filename", "provider", "cdnUrl", "workflow_name", "user_id",
	"generation_context", "save_assets"}

func (c *Connector) responses(ctx context.Context, j *job.Job, progress job.ProgressFunc) (map[string]any, map[string]any, error) {
	var p map[string]any
	if err := connectors.DecodePayload(j, &p); err != nil {
		return nil, nil, err
	}
	if dj, ok := p["dynamic_json"].(map[string]any); ok {
		p = dj
	}
	for _, k := range emPropsKeys {
		delete(p, k)
	}
	p["background"] = true
	if p["model"] == nil {
		p["model"] = c.s.RespModel
	}
	var created struct {
		ID string `json:"id"`
	}
	if err := c.call(ctx, http.MethodPost, "/responses", p, &created); err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(c.s.MaxPollTotal)
	for i := 1; ; i++ {
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = c.call(cctx, http.MethodPost, "/responses/"+created.ID+"/cancel", nil, nil)
			cancel()
			return nil, nil, ctx.Err()
		case <-time.After(c.s.PollEvery):
		}
		var r struct {
			Status string `json:"status"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
			Output []struct {
				Type    string `json:"type"`
				Content []struct {
					Type string `json:"type"`
					Text string `json:"text"`
				} `json:"content"`
			} `json:"output"`
			Usage map[string]any `json:"usage"`
		}
		if err := c.call(ctx, http.MethodGet, "/responses/"+created.ID, nil, &r); err != nil {
			return nil, nil, err
		}
		switch r.Status {
		case "completed":
			var text strings.Builder
			for _, o := range r.Output {
				for _, part := range o.Content {
					if part.Type == "output_text" {
						text.WriteString(part.Text)
					}
				}
			}
			return map[string]any{"response_id": created.ID, "text": text.String(), "model": p["model"]}, r.Usage, nil
		case "failed", "cancelled", "incomplete":
			msg := r.Status
			if r.Error != nil {
				msg += ": " + r.Error.Message
			}
			return nil, nil, fmt.Errorf("OpenAI response %s %s", created.ID, msg)
		}
		progress(job.Progress{Percent: min(90, float64(10+5*i)), Message: "OpenAI is working (" + r.Status + ")"})
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("OpenAI response %s still %s after %s", created.ID, r.Status, c.s.MaxPollTotal)
		}
	}
}
