// Package gemini runs gem-nano-banana jobs: Gemini's generateContent with an image model,
// through the shared remote client (rate limit, retries, breaker, the key cut from errors).
// Payloads are the old worker's: {prompt | text | contents}, where an inline_data.image_url is
// fetched and sent as base64; the image of the answer is saved as an asset.
package gemini

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/connectors/remote"
	"github.com/emp-job-queue/machine/core/job"
)

// DefaultURL is the old runtime's GEMINI_NANO_BANANA_URL.
const DefaultURL = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash-image-preview:generateContent"

// Settings configure the connector; the key is never logged or shown.
type Settings struct {
	URL        string // the model's generateContent endpoint
	APIKey     string
	Timeout    time.Duration // one request (default 45 s)
	MaxRetries int           // retries of one request (default 3)
	RatePerSec float64       // default 2
	Assets     assets.Saver
	Throttle   remote.Observer // hears 429s, the breaker and failed requests (nil: nobody)
}

// Connector runs gem-nano-banana jobs.
type Connector struct {
	s      Settings
	client *remote.Client
	fetch  *http.Client
}

// New returns a connector.
func New(s Settings) *Connector {
	if s.URL == "" {
		s.URL = DefaultURL
	}
	if s.Timeout <= 0 {
		s.Timeout = 45 * time.Second
	}
	if s.MaxRetries <= 0 {
		s.MaxRetries = 3
	}
	if s.RatePerSec <= 0 {
		s.RatePerSec = 2
	}
	return &Connector{s: s, fetch: &http.Client{Timeout: 30 * time.Second},
		client: remote.New(remote.Options{Name: "Gemini", RatePerSecond: s.RatePerSec, Burst: 2, Timeout: s.Timeout,
			MaxTries: uint(s.MaxRetries + 1), Secrets: []string{s.APIKey}, Observer: s.Throttle})}
}

// Available implements connectors.Availability: false while the breaker is open.
func (c *Connector) Available() bool { return c.client.Available() }

// maxImageBytes is the largest input image the connector sends (Gemini's inline limit).
const maxImageBytes = 20 << 20

type answer struct {
	Candidates []struct {
		Content struct {
			Parts []struct {
				Text       string `json:"text"`
				InlineData *struct {
					MimeType string `json:"mimeType"`
					Data     string `json:"data"`
				} `json:"inlineData"`
			} `json:"parts"`
		} `json:"content"`
		FinishReason string `json:"finishReason"`
	} `json:"candidates"`
	Images []struct { // the older Imagen shape
		Bytes    string `json:"bytes"`
		MimeType string `json:"mime_type"`
	} `json:"images"`
	PromptFeedback struct {
		BlockReason string `json:"blockReason"`
	} `json:"promptFeedback"`
	UsageMetadata map[string]any `json:"usageMetadata"`
	ModelVersion  string         `json:"modelVersion"`
	ResponseID    string         `json:"responseId"`
}

// Run implements connectors.Connector.
func (c *Connector) Run(ctx context.Context, j *job.Job, progress job.ProgressFunc) (job.Result, error) {
	if c.s.APIKey == "" {
		return job.Result{}, job.Permanent(errors.New("GEMINI_API_KEY (or GEMINI_API_KEY_FILE) is not set on this machine"))
	}
	start := time.Now()
	var p map[string]any
	if err := connectors.DecodePayload(j, &p); err != nil {
		return job.Result{}, err
	}
	progress(job.Progress{Percent: 10, Message: "preparing the Gemini request"})
	if err := c.inlineImages(ctx, p); err != nil {
		return job.Result{}, fmt.Errorf("gem-nano-banana job %s: %w", j.ID, err)
	}
	req, err := buildRequest(p)
	if err != nil {
		return job.Result{}, job.Permanent(fmt.Errorf("gem-nano-banana job %s: %w", j.ID, err))
	}
	raw, _ := json.Marshal(req)
	progress(job.Progress{Percent: 30, Message: "waiting for Gemini"})
	_, body, err := c.client.Do(ctx, func(ctx context.Context) (*http.Request, error) {
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, c.s.URL, bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		r.Header.Set("x-goog-api-key", c.s.APIKey)
		r.Header.Set("Content-Type", "application/json")
		return r, nil
	})
	if err != nil {
		return job.Result{}, err
	}
	progress(job.Progress{Percent: 80, Message: "saving the image"})
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		return job.Result{}, fmt.Errorf("gemini answered with malformed JSON (%v)", err)
	}
	img, mimeType, text, err := a.image()
	if err != nil {
		return job.Result{}, fmt.Errorf("gem-nano-banana job %s: %w", j.ID, err)
	}
	ext := ".png"
	if exts, _ := mime.ExtensionsByType(mimeType); len(exts) > 0 && mimeType != "image/png" {
		ext = exts[0]
	}
	saved, err := c.s.Assets.Save(ctx, j.ID, j.Ctx, ext, img)
	if err != nil {
		return job.Result{}, err
	}
	data := map[string]any{"content_type": "image", "image_url": saved.URL, "mime_type": mimeType, "raw_response": stripImages(body)}
	if text != "" {
		data["text"] = text
	}
	progress(job.Progress{Percent: 100, Message: "completed"})
	return job.Result{
		Success: true, Data: data, ProcessingTimeMS: time.Since(start).Milliseconds(),
		Metadata:    map[string]any{"service": "gemini", "connector": "gem_nano_banana", "api_version": "v1beta", "usage": a.UsageMetadata},
		OutputFiles: []job.OutputFile{{Filename: saved.Path[strings.LastIndex(saved.Path, "/")+1:], Path: saved.URL, Type: "image", SizeBytes: saved.Size, MimeType: mimeType}},
		ServiceMetadata: &job.ServiceMetadata{ServiceVersion: "gemini-v1beta", ServiceType: "gem-nano-banana", ServiceJobID: a.ResponseID,
			ModelUsed: a.ModelVersion},
	}, nil
}

// image is the first image of the answer, with the answer's text. A blocked prompt or a
// safety stop is permanent; an answer with no image otherwise is worth another try.
func (a answer) image() ([]byte, string, string, error) {
	if a.PromptFeedback.BlockReason != "" {
		return nil, "", "", job.Permanent(fmt.Errorf("gemini blocked the prompt (%s); change the prompt", a.PromptFeedback.BlockReason))
	}
	var texts []string
	reason := ""
	for _, cand := range a.Candidates {
		reason = cand.FinishReason
		for _, part := range cand.Content.Parts {
			if part.Text != "" {
				texts = append(texts, part.Text)
			}
			if part.InlineData != nil && part.InlineData.Data != "" {
				b, err := base64.StdEncoding.DecodeString(part.InlineData.Data)
				if err != nil {
					return nil, "", "", fmt.Errorf("gemini's image is not base64 (%v)", err)
				}
				return b, part.InlineData.MimeType, strings.Join(texts, "\n"), nil
			}
		}
	}
	for _, im := range a.Images {
		b, err := base64.StdEncoding.DecodeString(im.Bytes)
		if err == nil && len(b) > 0 {
			return b, im.MimeType, "", nil
		}
	}
	text := strings.Join(texts, " ")
	if len(text) > 200 {
		text = text[:200] + "…"
	}
	switch reason {
	case "SAFETY", "PROHIBITED_CONTENT", "IMAGE_SAFETY", "BLOCKLIST", "RECITATION":
		return nil, "", "", job.Permanent(fmt.Errorf("gemini returned no image (finish reason %s); change the prompt", reason))
	}
	return nil, "", "", fmt.Errorf("gemini returned no image (finish reason %q, text %q)", reason, text)
}

// buildRequest turns a payload into a generateContent request, as the old connector did: a
// payload already in Gemini's shape (contents whose first part is text) goes as it is; else
// the prompt (or text) becomes the text part, followed by the inline images of contents.
func buildRequest(p map[string]any) (map[string]any, error) {
	prompt, _ := p["prompt"].(string)
	if prompt == "" {
		prompt, _ = p["text"].(string)
	}
	contents, _ := p["contents"].([]any)
	if prompt == "" && firstText(contents) != "" {
		req := map[string]any{"contents": contents}
		for _, k := range []string{"generationConfig", "generation_config", "safetySettings", "safety_settings", "systemInstruction", "system_instruction"} {
			if v, ok := p[k]; ok {
				req[k] = v
			}
		}
		return req, nil
	}
	if prompt == "" {
		return nil, errors.New("the payload has no prompt, text or contents; send {\"prompt\": \"...\"}")
	}
	parts := []any{map[string]any{"text": prompt}}
	for _, c := range contents {
		cm, _ := c.(map[string]any)
		ps, _ := cm["parts"].([]any)
		for _, part := range ps {
			pm, _ := part.(map[string]any)
			if d, ok := pm["inline_data"]; ok {
				parts = append(parts, map[string]any{"inlineData": d})
			} else if d, ok := pm["inlineData"]; ok {
				parts = append(parts, map[string]any{"inlineData": d})
			}
		}
	}
	req := map[string]any{"contents": []any{map[string]any{"parts": parts}}}
	if v, ok := p["generationConfig"]; ok {
		req["generationConfig"] = v
	}
	return req, nil
}

func firstText(contents []any) string {
	if len(contents) == 0 {
		return ""
	}
	cm, _ := contents[0].(map[string]any)
	ps, _ := cm["parts"].([]any)
	if len(ps) == 0 {
		return ""
	}
	pm, _ := ps[0].(map[string]any)
	s, _ := pm["text"].(string)
	return s
}

// inlineImages replaces every inline_data.image_url in the payload by the image itself:
// {mime_type, data (base64)}.
func (c *Connector) inlineImages(ctx context.Context, v any) error {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if d, ok := x.(map[string]any); ok && (k == "inline_data" || k == "inlineData") {
				if u, ok := d["image_url"].(string); ok && u != "" {
					data, mimeType, err := c.image(ctx, u)
					if err != nil {
						return err
					}
					t[k] = map[string]any{"mime_type": mimeType, "data": base64.StdEncoding.EncodeToString(data)}
					continue
				}
			}
			if err := c.inlineImages(ctx, x); err != nil {
				return err
			}
		}
	case []any:
		for _, x := range t {
			if err := c.inlineImages(ctx, x); err != nil {
				return err
			}
		}
	}
	return nil
}

// image fetches an input image (an http(s) or data: URL), at most 20 MiB. A URL that cannot
// be an image, or that the server refuses, fails the job for good.
func (c *Connector) image(ctx context.Context, u string) ([]byte, string, error) {
	if rest, ok := strings.CutPrefix(u, "data:"); ok {
		meta, enc, found := strings.Cut(rest, ",")
		if !found || !strings.HasSuffix(meta, ";base64") {
			return nil, "", job.Permanent(errors.New("inline_data.image_url is a data: URL that is not base64"))
		}
		b, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			return nil, "", job.Permanent(fmt.Errorf("inline_data.image_url is a data: URL that is not base64 (%v)", err))
		}
		return b, strings.TrimSuffix(meta, ";base64"), nil
	}
	if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return nil, "", job.Permanent(fmt.Errorf("inline_data.image_url %q is not an http(s) or data: URL", u))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", job.Permanent(fmt.Errorf("inline_data.image_url %q is not a URL", u))
	}
	resp, err := c.fetch.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("fetch inline_data.image_url: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		err := fmt.Errorf("fetch inline_data.image_url %s: %s", u, resp.Status)
		if resp.StatusCode < 500 {
			return nil, "", job.Permanent(err)
		}
		return nil, "", err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxImageBytes+1))
	if err != nil {
		return nil, "", fmt.Errorf("fetch inline_data.image_url: %w", err)
	}
	if len(b) > maxImageBytes {
		return nil, "", job.Permanent(fmt.Errorf("inline_data.image_url %s is larger than 20 MiB, Gemini's limit for an inline image", u))
	}
	mimeType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if !strings.HasPrefix(mimeType, "image/") {
		mimeType = http.DetectContentType(b)
	}
	if !strings.HasPrefix(mimeType, "image/") {
		return nil, "", job.Permanent(fmt.Errorf("inline_data.image_url %s is not an image (%s)", u, mimeType))
	}
	return b, mimeType, nil
}

// stripImages is the raw answer with its base64 images replaced by a note: the image is at
// image_url, and results stay small.
func stripImages(body []byte) any {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return nil
	}
	var walk func(any)
	walk = func(x any) {
		switch t := x.(type) {
		case map[string]any:
			for k, y := range t {
				if d, ok := y.(map[string]any); ok && k == "inlineData" {
					d["data"] = "(saved as image_url)"
					continue
				}
				walk(y)
			}
		case []any:
			for _, y := range t {
				walk(y)
			}
		}
	}
	walk(v)
	return v
}
