// Package a1111 runs a1111 jobs on the AUTOMATIC1111 WebUI instance of the slot's GPU:
// POST /sdapi/v1/txt2img (or img2img when the payload brings init_images) with the old worker's
// fields and defaults, progress from /sdapi/v1/progress while it runs, /sdapi/v1/interrupt when
// the job is cancelled, and the images saved as assets.
package a1111

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/job"
)

// Settings configure the connector for one A1111 instance.
type Settings struct {
	BaseURL   string        // the instance, e.g. http://127.0.0.1:7860
	Timeout   time.Duration // one generation (A1111_TIMEOUT_SECONDS; default 10 minutes)
	PollEvery time.Duration // how often progress is read (default 500 ms)
	Assets    assets.Saver
}

// Connector runs jobs on one A1111 instance, one at a time (its slot's).
type Connector struct {
	s    Settings
	http *http.Client
}

// New returns a connector.
func New(s Settings) *Connector {
	s.BaseURL = strings.TrimRight(s.BaseURL, "/")
	if s.Timeout <= 0 {
		s.Timeout = 10 * time.Minute
	}
	if s.PollEvery <= 0 {
		s.PollEvery = 500 * time.Millisecond
	}
	return &Connector{s: s, http: &http.Client{}}
}

// defaults are the old worker's values for fields a payload leaves out.
var defaults = map[string]any{
	"negative_prompt": "", "width": 512, "height": 512, "steps": 20, "cfg_scale": 7.0, "sampler_name": "Euler a",
	"scheduler": "automatic", "seed": -1, "batch_size": 1, "n_iter": 1, "restore_faces": false, "tiling": false,
	"do_not_save_samples": true, "do_not_save_grid": true, "override_settings": map[string]any{},
	"override_settings_restore_afterwards": true, "disable_extra_networks": false, "comments": map[string]any{},
}

// notForA1111 are payload keys that say where results go or how to route the job; they are
// not sent to A1111.
var notForA1111 = []string{"ctx", "bucket", "prefix", "filename", "provider", "cdnUrl", "workflow_name", "user_id",
	"generation_context", "save_assets", "mode", "operation"}

// Run implements connectors.Connector.
func (c *Connector) Run(ctx context.Context, j *job.Job, progress job.ProgressFunc) (job.Result, error) {
	start := time.Now()
	var p map[string]any
	if err := connectors.DecodePayload(j, &p); err != nil {
		return job.Result{}, err
	}
	if prompt, ok := p["prompt"].(string); !ok || strings.TrimSpace(prompt) == "" {
		return job.Result{}, job.Permanent(fmt.Errorf("a1111 job %s has no prompt; send {\"prompt\": \"...\"} with A1111's txt2img or img2img fields", j.ID))
	}
	endpoint := "/sdapi/v1/txt2img"
	if mode, _ := p["mode"].(string); mode == "img2img" || p["init_images"] != nil {
		endpoint = "/sdapi/v1/img2img"
		if err := c.inlineInitImages(ctx, p); err != nil {
			return job.Result{}, fmt.Errorf("a1111 job %s: %w", j.ID, err)
		}
	}
	for _, k := range notForA1111 {
		delete(p, k)
	}
	for k, v := range defaults {
		if _, ok := p[k]; !ok {
			p[k] = v
		}
	}
	progress(job.Progress{Percent: 5, Message: "submitted to A1111"})

	// The generation is one blocking request; its progress is read beside it.
	genCtx, cancel := context.WithTimeout(ctx, c.s.Timeout)
	defer cancel()
	type answer struct {
		body []byte
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		b, err := c.post(genCtx, endpoint, p)
		done <- answer{b, err}
	}()
	var got answer
	tick := time.NewTicker(c.s.PollEvery)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case got = <-done:
			waiting = false
		case <-tick.C:
			if pr, ok := c.progress(genCtx); ok {
				progress(pr)
			}
		}
	}
	if genCtx.Err() != nil {
		// A1111 goes on generating after its client leaves: interrupt it, so the next job
		// does not wait behind this one.
		ictx, icancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_, _ = c.post(ictx, "/sdapi/v1/interrupt", nil)
		icancel()
		if ctx.Err() != nil {
			return job.Result{}, ctx.Err()
		}
		return job.Result{}, fmt.Errorf("a1111 job %s did not finish within A1111_TIMEOUT_SECONDS (%s); the generation was interrupted", j.ID, c.s.Timeout)
	}
	if got.err != nil {
		return job.Result{}, got.err
	}
	var res struct {
		Images     []string       `json:"images"`
		Parameters map[string]any `json:"parameters"`
		Info       string         `json:"info"`
	}
	if err := json.Unmarshal(got.body, &res); err != nil {
		return job.Result{}, fmt.Errorf("A1111 answered %s with malformed JSON (%v)", endpoint, err)
	}
	if len(res.Images) == 0 {
		return job.Result{}, fmt.Errorf("A1111 generated no images for job %s", j.ID)
	}
	progress(job.Progress{Percent: 95, Message: fmt.Sprintf("saving %d image(s)", len(res.Images))})
	var urls []string
	var files []job.OutputFile
	for i, b64 := range res.Images {
		img, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return job.Result{}, fmt.Errorf("A1111 image %d of job %s is not base64 (%v)", i, j.ID, err)
		}
		id := j.ID
		if i > 0 {
			id = fmt.Sprintf("%s_%d", j.ID, i)
		}
		saved, err := c.s.Assets.Save(ctx, id, j.Ctx, ".png", img)
		if err != nil {
			return job.Result{}, err
		}
		urls = append(urls, saved.URL)
		files = append(files, job.OutputFile{Filename: path.Base(saved.Path), Path: saved.URL, Type: "image", SizeBytes: saved.Size, MimeType: "image/png"})
	}
	var info any = res.Info
	var parsed map[string]any
	if json.Unmarshal([]byte(res.Info), &parsed) == nil {
		info = parsed
	}
	model := "default"
	if o, ok := p["override_settings"].(map[string]any); ok {
		if m, ok := o["sd_model_checkpoint"].(string); ok && m != "" {
			model = m
		}
	}
	progress(job.Progress{Percent: 100, Message: fmt.Sprintf("generated %d image(s)", len(urls))})
	// images stays base64, as the old worker returned A1111's answer; image_url and image_urls
	// point to the saved assets.
	data := map[string]any{"images": res.Images, "parameters": res.Parameters, "info": info,
		"image_url": urls[0], "image_urls": urls, "mime_type": "image/png", "content_type": "image"}
	return job.Result{Success: true, Data: data, OutputFiles: files, ProcessingTimeMS: time.Since(start).Milliseconds(),
		ServiceMetadata: &job.ServiceMetadata{ServiceVersion: "a1111", ServiceType: "a1111", ModelUsed: model}}, nil
}

// progress reads /sdapi/v1/progress: 5..95 % with the sampling step.
func (c *Connector) progress(ctx context.Context) (job.Progress, bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.s.BaseURL+"/sdapi/v1/progress?skip_current_image=true", nil)
	resp, err := c.http.Do(req)
	if err != nil {
		return job.Progress{}, false
	}
	defer resp.Body.Close()
	var p struct {
		Progress float64 `json:"progress"`
		State    struct {
			SamplingStep  int `json:"sampling_step"`
			SamplingSteps int `json:"sampling_steps"`
		} `json:"state"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&p) != nil || p.State.SamplingSteps == 0 {
		return job.Progress{}, false
	}
	return job.Progress{Percent: 5 + 90*min(1, max(0, p.Progress)), Step: p.State.SamplingStep, TotalSteps: p.State.SamplingSteps,
		Message: fmt.Sprintf("step %d/%d", p.State.SamplingStep, p.State.SamplingSteps)}, true
}

// post sends a request to the instance. A request A1111 refuses (bad fields, an unknown
// sampler or model) fails the job for good; an unreachable or failing instance is retryable.
func (c *Connector) post(ctx context.Context, endpoint string, body any) ([]byte, error) {
	var raw []byte
	if body != nil {
		raw, _ = json.Marshal(body)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.s.BaseURL+endpoint, bytes.NewReader(raw))
	if err != nil {
		return nil, job.Permanent(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("A1111 at %s does not answer (%w); the machine restarts it, and the job is retried", c.s.BaseURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("A1111 answer to %s: %w", endpoint, err)
	}
	if resp.StatusCode < 300 {
		return b, nil
	}
	msg := strings.TrimSpace(string(b))
	var e struct {
		Detail any    `json:"detail"`
		Errors string `json:"errors"`
	}
	if json.Unmarshal(b, &e) == nil {
		switch {
		case e.Errors != "":
			msg = e.Errors
		case e.Detail != nil && e.Detail != "":
			d, _ := json.Marshal(e.Detail)
			msg = strings.Trim(string(d), `"`)
		}
	}
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	if resp.StatusCode < 500 {
		return nil, job.Permanent(fmt.Errorf("A1111 refused the job (%s): %s", resp.Status, msg))
	}
	return nil, fmt.Errorf("A1111 failed (%s): %s", resp.Status, msg)
}

// inlineInitImages fetches init_images given as http(s) URLs, since A1111 takes base64.
func (c *Connector) inlineInitImages(ctx context.Context, p map[string]any) error {
	imgs, ok := p["init_images"].([]any)
	if !ok || len(imgs) == 0 {
		return job.Permanent(errors.New("img2img needs init_images: a list of images as base64 or http(s) URLs"))
	}
	for i, x := range imgs {
		u, _ := x.(string)
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			continue
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return job.Permanent(fmt.Errorf("init_images[%d] %q is not a URL", i, u))
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return fmt.Errorf("fetch init_images[%d]: %w", i, err)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		resp.Body.Close()
		if resp.StatusCode >= 400 {
			return job.Permanent(fmt.Errorf("fetch init_images[%d] %s: %s", i, u, resp.Status))
		}
		if err != nil {
			return fmt.Errorf("fetch init_images[%d]: %w", i, err)
		}
		imgs[i] = base64.StdEncoding.EncodeToString(b)
	}
	return nil
}
