// Package comfyui runs jobs on a ComfyUI server through its stock API: the workflow goes to
// POST /prompt with a client id, progress comes from the /ws stream, outputs from
// /history/{id}. A silent websocket is not trusted: after the inactivity timeout the history is
// checked and the stream reopened, so a completion is never missed; a server that went away is
// a retryable failure; cancellation interrupts the prompt on the server.
package comfyui

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/job"
)

// Settings say where the ComfyUI server is and how patient to be with it.
type Settings struct {
	BaseURL    string        // e.g. http://127.0.0.1:8188
	Token      string        // bearer token for a remote server; never logged
	Inactivity time.Duration // silence on the websocket before the history is checked (default 120 s)
	Silences   int           // silent windows in a row, with no completion in the history, before giving up (default 5)
	Assets     assets.Saver  // where outputs are copied to; nil: results point at ComfyUI's /view
}

// Connector runs ComfyUI jobs.
type Connector struct {
	s      Settings
	client *http.Client
}

// New returns a connector for one ComfyUI server.
func New(s Settings) *Connector {
	if s.Inactivity <= 0 {
		s.Inactivity = 2 * time.Minute
	}
	if s.Silences <= 0 {
		s.Silences = 5
	}
	s.BaseURL = strings.TrimRight(s.BaseURL, "/")
	return &Connector{s: s, client: &http.Client{Timeout: 30 * time.Second}}
}

// ErrGone says the ComfyUI server stopped answering mid-prompt.
var ErrGone = errors.New("ComfyUI went away mid-prompt")

func newClientID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Run implements connectors.Connector.
func (c *Connector) Run(ctx context.Context, j *job.Job, progress job.ProgressFunc) (job.Result, error) {
	start := time.Now()
	workflow, err := workflowOf(j)
	if err != nil {
		return job.Result{}, err
	}
	clientID := newClientID()
	ws, err := c.dial(ctx, clientID)
	if err != nil {
		return job.Result{}, fmt.Errorf("ComfyUI at %s does not answer (%v); the service may still be starting", c.s.BaseURL, err)
	}
	defer func() { _ = ws.CloseNow() }()
	// ComfyUI registers the socket, then greets it with a status message; a prompt sent before
	// the greeting could run with nobody listening to its progress.
	c.awaitGreeting(ctx, ws)
	promptID, err := c.submit(ctx, workflow, clientID)
	if err != nil {
		return job.Result{}, err
	}
	progress(job.Progress{Percent: 5, Message: "queued in ComfyUI"})
	if err := c.follow(ctx, ws, clientID, promptID, progress); err != nil {
		if ctx.Err() != nil {
			c.interrupt(promptID)
			return job.Result{}, ctx.Err()
		}
		return job.Result{}, err
	}
	outputs, err := c.outputs(ctx, promptID)
	if err != nil {
		return job.Result{}, err
	}
	res := c.result(promptID, outputs, time.Since(start))
	if c.s.Assets != nil {
		if err := c.store(ctx, j, &res); err != nil {
			return job.Result{}, err
		}
	}
	return res, nil
}

// store copies the outputs from ComfyUI's /view into the asset store, so the result points at
// storage that outlives the ComfyUI instance.
func (c *Connector) store(ctx context.Context, j *job.Job, res *job.Result) error {
	data := res.Data.(map[string]any)
	images, _ := data["images"].([]map[string]any)
	for i, im := range images {
		resp, err := c.request(ctx, http.MethodGet, strings.TrimPrefix(im["url"].(string), c.s.BaseURL), nil)
		if err != nil {
			return fmt.Errorf("fetch output %s from ComfyUI: %w", im["filename"], err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return fmt.Errorf("fetch output %s from ComfyUI: %v %s", im["filename"], err, resp.Status)
		}
		id := j.ID
		if i > 0 {
			id = fmt.Sprintf("%s_%d", j.ID, i)
		}
		end := job.Mark(ctx, job.PhaseUpload)
		saved, err := c.s.Assets.Save(ctx, id, j.Ctx, path.Ext(im["filename"].(string)), body)
		end()
		if err != nil {
			return err
		}
		im["url"] = saved.URL
		res.OutputFiles[i].Path, res.OutputFiles[i].SizeBytes = saved.URL, saved.Size
		if i == 0 {
			data["image_url"] = saved.URL
		}
	}
	return nil
}

// workflowOf takes payload.workflow when present (the EmProps shape), else the payload.
func workflowOf(j *job.Job) (json.RawMessage, error) {
	var wrapper struct {
		Workflow json.RawMessage `json:"workflow"`
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(j.Payload, &m); err != nil || m == nil {
		return nil, job.Permanent(fmt.Errorf("payload of comfyui job %s is not a ComfyUI workflow object; send the API-format workflow (or {\"workflow\": …})", j.ID))
	}
	_ = json.Unmarshal(j.Payload, &wrapper)
	if len(wrapper.Workflow) > 0 && wrapper.Workflow[0] == '{' {
		return wrapper.Workflow, nil
	}
	return j.Payload, nil
}

func (c *Connector) request(ctx context.Context, method, p string, body any) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.s.BaseURL+p, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.s.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.s.Token)
	}
	return c.client.Do(req)
}

func (c *Connector) dial(ctx context.Context, clientID string) (*websocket.Conn, error) {
	u := strings.Replace(c.s.BaseURL, "http", "ws", 1) + "/ws?clientId=" + clientID
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	opts := &websocket.DialOptions{}
	if c.s.Token != "" {
		opts.HTTPHeader = http.Header{"Authorization": {"Bearer " + c.s.Token}}
	}
	conn, _, err := websocket.Dial(dctx, u, opts)
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(64 << 20) // previews can be large
	return conn, nil
}

// awaitGreeting waits (briefly) for the server's first message on a new socket. Without one the
// prompt is sent anyway: the history check after a silence still catches its end.
func (c *Connector) awaitGreeting(ctx context.Context, ws *websocket.Conn) {
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		typ, _, err := ws.Read(gctx)
		if err != nil || typ == websocket.MessageText {
			return
		}
	}
}

// submit queues the workflow. A rejected workflow is permanent; a server error is not.
func (c *Connector) submit(ctx context.Context, workflow json.RawMessage, clientID string) (string, error) {
	resp, err := c.request(ctx, http.MethodPost, "/prompt", map[string]any{"prompt": workflow, "client_id": clientID})
	if err != nil {
		return "", fmt.Errorf("POST /prompt to ComfyUI at %s: %w", c.s.BaseURL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusBadRequest:
		return "", job.Permanent(fmt.Errorf("ComfyUI rejected the workflow: %s", rejection(body)))
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("ComfyUI answered POST /prompt with %s", resp.Status)
	}
	var ok struct {
		PromptID string `json:"prompt_id"`
	}
	if err := json.Unmarshal(body, &ok); err != nil || ok.PromptID == "" {
		return "", fmt.Errorf("ComfyUI's answer to POST /prompt has no prompt_id: %.200s", body)
	}
	return ok.PromptID, nil
}

// rejection summarises ComfyUI's validation errors in one sentence.
func rejection(body []byte) string {
	var r struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
		NodeErrors map[string]struct {
			ClassType string `json:"class_type"`
			Errors    []struct {
				Message string `json:"message"`
				Details string `json:"details"`
			} `json:"errors"`
		} `json:"node_errors"`
	}
	if json.Unmarshal(body, &r) != nil {
		return fmt.Sprintf("%.300s", body)
	}
	parts := []string{r.Error.Message}
	for node, ne := range r.NodeErrors {
		for _, e := range ne.Errors {
			parts = append(parts, fmt.Sprintf("node %s (%s): %s %s", node, ne.ClassType, e.Message, e.Details))
		}
	}
	return strings.Join(parts, "; ")
}

type message struct {
	Type string `json:"type"`
	Data struct {
		PromptID         string  `json:"prompt_id"`
		Node             *string `json:"node"`
		Value            float64 `json:"value"`
		Max              float64 `json:"max"`
		ExceptionMessage string  `json:"exception_message"`
		NodeType         string  `json:"node_type"`
	} `json:"data"`
}

// follow reads the stream until the prompt ends. Silence longer than the inactivity timeout,
// or a dropped stream, is checked against /history and the stream reopened.
func (c *Connector) follow(ctx context.Context, ws *websocket.Conn, clientID, promptID string, progress job.ProgressFunc) error {
	silences := 0
	for {
		rctx, cancel := context.WithTimeout(ctx, c.s.Inactivity)
		typ, data, err := ws.Read(rctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			done, herr := c.finished(ctx, promptID)
			switch {
			case herr == nil && done:
				return nil
			case herr != nil:
				return fmt.Errorf("%w (%s: %v)", ErrGone, c.s.BaseURL, herr)
			}
			if silences++; silences >= c.s.Silences {
				return fmt.Errorf("ComfyUI said nothing about prompt %s for %s and its history shows no end; giving up on this attempt",
					promptID, time.Duration(silences)*c.s.Inactivity)
			}
			_ = ws.CloseNow()
			if ws, err = c.dial(ctx, clientID); err != nil {
				return fmt.Errorf("%w (%s: %v)", ErrGone, c.s.BaseURL, err)
			}
			continue
		}
		silences = 0
		if typ != websocket.MessageText {
			continue // previews
		}
		var m message
		if json.Unmarshal(data, &m) != nil || (m.Data.PromptID != "" && m.Data.PromptID != promptID) {
			continue
		}
		switch m.Type {
		case "progress":
			if m.Data.Max > 0 {
				progress(job.Progress{Percent: 5 + 90*m.Data.Value/m.Data.Max, Message: fmt.Sprintf("step %.0f/%.0f", m.Data.Value, m.Data.Max),
					Step: int(m.Data.Value), TotalSteps: int(m.Data.Max)})
			}
		case "execution_success":
			return nil
		case "executing":
			if m.Data.Node == nil && m.Data.PromptID == promptID {
				return nil
			}
		case "execution_error":
			return fmt.Errorf("ComfyUI failed in node %s: %s", m.Data.NodeType, m.Data.ExceptionMessage)
		case "execution_interrupted":
			return fmt.Errorf("ComfyUI interrupted prompt %s", promptID)
		}
	}
}

type historyEntry struct {
	Outputs map[string]struct {
		Images []image `json:"images"`
	} `json:"outputs"`
	Status struct {
		StatusStr string `json:"status_str"`
		Completed bool   `json:"completed"`
	} `json:"status"`
}

type image struct {
	Filename  string `json:"filename"`
	Subfolder string `json:"subfolder"`
	Type      string `json:"type"`
}

func (c *Connector) history(ctx context.Context, promptID string) (*historyEntry, error) {
	resp, err := c.request(ctx, http.MethodGet, "/history/"+url.PathEscape(promptID), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /history answered %s", resp.Status)
	}
	var h map[string]historyEntry
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return nil, fmt.Errorf("GET /history: %w", err)
	}
	if e, ok := h[promptID]; ok {
		return &e, nil
	}
	return nil, nil
}

// finished reports whether the history shows the prompt done (an error entry is done too: the
// outputs step reports it).
func (c *Connector) finished(ctx context.Context, promptID string) (bool, error) {
	e, err := c.history(ctx, promptID)
	return e != nil, err
}

func (c *Connector) outputs(ctx context.Context, promptID string) (*historyEntry, error) {
	e, err := c.history(ctx, promptID)
	if err != nil {
		return nil, fmt.Errorf("read the outputs of prompt %s: %w", promptID, err)
	}
	if e == nil {
		return nil, fmt.Errorf("ComfyUI has no history of prompt %s", promptID)
	}
	if e.Status.StatusStr == "error" {
		return nil, fmt.Errorf("ComfyUI's history marks prompt %s as failed", promptID)
	}
	return e, nil
}

func (c *Connector) result(promptID string, e *historyEntry, took time.Duration) job.Result {
	var images []map[string]any
	var files []job.OutputFile
	for node, out := range e.Outputs {
		for _, im := range out.Images {
			q := url.Values{"filename": {im.Filename}, "subfolder": {im.Subfolder}, "type": {im.Type}}
			u := c.s.BaseURL + "/view?" + q.Encode()
			mt := mime.TypeByExtension(path.Ext(im.Filename))
			images = append(images, map[string]any{"node": node, "filename": im.Filename, "subfolder": im.Subfolder, "type": im.Type, "url": u, "mime_type": mt})
			files = append(files, job.OutputFile{Filename: im.Filename, Path: u, Type: "image", MimeType: mt})
		}
	}
	data := map[string]any{"prompt_id": promptID, "images": images}
	if len(images) > 0 {
		data["image_url"], data["mime_type"], data["content_type"] = images[0]["url"], images[0]["mime_type"], "image"
	}
	return job.Result{Success: true, Data: data, ProcessingTimeMS: took.Milliseconds(), OutputFiles: files,
		ServiceMetadata: &job.ServiceMetadata{ServiceVersion: "comfyui", ServiceType: "comfyui", ServiceJobID: promptID}}
}

// interrupt stops the prompt on the server: it is running, or still queued.
func (c *Connector) interrupt(promptID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, r := range []struct {
		p    string
		body any
	}{{"/interrupt", map[string]any{"prompt_id": promptID}}, {"/queue", map[string]any{"delete": []string{promptID}}}} {
		if resp, err := c.request(ctx, http.MethodPost, r.p, r.body); err == nil {
			resp.Body.Close()
		}
	}
}

var _ connectors.Connector = (*Connector)(nil)
