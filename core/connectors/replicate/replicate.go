// Package replicate runs jobs as Replicate predictions: created by model version or by model
// name, followed until they end, cancelled with the job, their output files saved as assets.
package replicate

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"path"
	"strings"
	"time"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/connectors/remote"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/netguard"
)

// Settings configure the connector; the token is never logged or shown.
type Settings struct {
	BaseURL    string // default https://api.replicate.com/v1
	Token      string
	PollEvery  time.Duration
	MaxWait    time.Duration
	RatePerSec float64
	Assets     assets.Saver
	Downloads  netguard.Policy // what output URLs may point at (the zero value: public addresses only)
	Throttle   remote.Observer // hears 429s, the breaker and failed requests (nil: nobody)
}

// Connector runs Replicate jobs.
type Connector struct {
	s      Settings
	client *remote.Client
}

// New returns a connector.
func New(s Settings) *Connector {
	if s.BaseURL == "" {
		s.BaseURL = "https://api.replicate.com/v1"
	}
	s.BaseURL = strings.TrimRight(s.BaseURL, "/")
	if s.PollEvery <= 0 {
		s.PollEvery = time.Second
	}
	if s.MaxWait <= 0 {
		s.MaxWait = 30 * time.Minute
	}
	return &Connector{s: s, client: remote.New(remote.Options{Name: "Replicate", RatePerSecond: s.RatePerSec, Secrets: []string{s.Token},
		Downloads: s.Downloads, Observer: s.Throttle})}
}

// Available implements connectors.Availability.
func (c *Connector) Available() bool { return c.client.Available() }

type prediction struct {
	ID     string `json:"id"`
	Status string `json:"status"` // starting, processing, succeeded, failed, canceled
	Output any    `json:"output"`
	Error  any    `json:"error"`
	Logs   string `json:"logs"`
	// Metrics holds predict_time (seconds the model ran: what Replicate bills) once it ends.
	Metrics map[string]any `json:"metrics"`
}

// Run implements connectors.Connector.
func (c *Connector) Run(ctx context.Context, j *job.Job, progress job.ProgressFunc) (job.Result, error) {
	if c.s.Token == "" {
		return job.Result{}, job.Permanent(fmt.Errorf("REPLICATE_API_TOKEN (or REPLICATE_API_TOKEN_FILE) is not set on this machine"))
	}
	start := time.Now()
	var p struct {
		Version string         `json:"version"`
		Model   string         `json:"model"`
		Input   map[string]any `json:"input"`
	}
	if err := connectors.DecodePayload(j, &p); err != nil {
		return job.Result{}, err
	}
	url, body := c.s.BaseURL+"/predictions", map[string]any{"input": p.Input}
	switch {
	case p.Version != "":
		body["version"] = p.Version
	case strings.Count(p.Model, "/") == 1:
		url = c.s.BaseURL + "/models/" + p.Model + "/predictions"
	default:
		return job.Result{}, job.Permanent(fmt.Errorf("replicate job %s names neither a version nor a model owner/name", j.ID))
	}
	var pred prediction
	if err := c.client.JSON(ctx, "POST", url, c.s.Token, body, &pred); err != nil {
		return job.Result{}, err
	}
	progress(job.Progress{Percent: 5, Message: "prediction " + pred.Status})
	err := remote.Poll(ctx, c.s.PollEvery, c.s.MaxWait, func(ctx context.Context) (bool, error) {
		if err := c.client.JSON(ctx, "GET", c.s.BaseURL+"/predictions/"+pred.ID, c.s.Token, nil, &pred); err != nil {
			return false, err
		}
		switch pred.Status {
		case "succeeded":
			return true, nil
		case "failed", "canceled":
			return false, fmt.Errorf("the Replicate prediction %s %s: %v", pred.ID, pred.Status, pred.Error)
		}
		progress(job.Progress{Percent: 50, Message: "prediction " + pred.Status})
		return false, nil
	})
	if ctx.Err() != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = c.client.JSON(cctx, "POST", c.s.BaseURL+"/predictions/"+pred.ID+"/cancel", c.s.Token, nil, nil)
		cancel()
		return job.Result{}, ctx.Err()
	}
	if err != nil {
		return job.Result{}, err
	}
	data, files, err := c.saveOutputs(ctx, j, pred.Output)
	if err != nil {
		return job.Result{}, err
	}
	data["prediction_id"] = pred.ID
	return job.Result{Success: true, Data: data, OutputFiles: files, ProcessingTimeMS: time.Since(start).Milliseconds(),
		ServiceMetadata: &job.ServiceMetadata{ServiceVersion: "replicate-v1", ServiceType: "replicate", ServiceJobID: pred.ID},
		APIUsage:        pred.Metrics}, nil
}

// saveOutputs stores output URLs as assets; other outputs (text, numbers) are returned as is.
func (c *Connector) saveOutputs(ctx context.Context, j *job.Job, out any) (map[string]any, []job.OutputFile, error) {
	var urls []string
	switch o := out.(type) {
	case string:
		if strings.HasPrefix(o, "http") {
			urls = []string{o}
		}
	case []any:
		for _, x := range o {
			if s, ok := x.(string); ok && strings.HasPrefix(s, "http") {
				urls = append(urls, s)
			}
		}
	}
	data := map[string]any{"output": out}
	var files []job.OutputFile
	for i, u := range urls {
		body, err := c.client.Fetch(ctx, u)
		if err != nil {
			return nil, nil, fmt.Errorf("download Replicate output %s: %w", u, err)
		}
		ext := path.Ext(strings.SplitN(u, "?", 2)[0])
		id := j.ID
		if i > 0 {
			id = fmt.Sprintf("%s_%d", j.ID, i)
		}
		end := job.Mark(ctx, job.PhaseUpload)
		saved, err := c.s.Assets.Save(ctx, id, outputCtx(j.Ctx, i), ext, body)
		end()
		if err != nil {
			return nil, nil, err
		}
		files = append(files, job.OutputFile{Filename: path.Base(saved.Path), Path: saved.URL, Type: kind(ext), SizeBytes: saved.Size, MimeType: saved.MimeType})
		if i == 0 {
			data["image_url"], data["mime_type"] = saved.URL, mime.TypeByExtension(ext)
		}
	}
	return data, files, nil
}

func kind(ext string) string {
	switch t := mime.TypeByExtension(ext); {
	case strings.HasPrefix(t, "image/"):
		return "image"
	case strings.HasPrefix(t, "video/"):
		return "video"
	case strings.HasPrefix(t, "audio/"):
		return "audio"
	}
	return "binary"
}

// outputCtx is the job's ctx for its output i: the same storage and prefix, without the
// filename for outputs after the first, so they do not overwrite it.
func outputCtx(jobCtx json.RawMessage, i int) json.RawMessage {
	if i == 0 || len(jobCtx) == 0 {
		return jobCtx
	}
	var m map[string]any
	if json.Unmarshal(jobCtx, &m) != nil {
		return jobCtx
	}
	delete(m, "filename")
	b, err := json.Marshal(m)
	if err != nil {
		return jobCtx
	}
	return b
}
