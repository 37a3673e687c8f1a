// Package fakejobapis holds in-repo Replicate and RunPod servers for tests: the real request
// and answer shapes, jobs that take a few polls, failures and cancellation on request.
package fakejobapis

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
)

// Jobs is the shared state of both fakes.
type Jobs struct {
	Token string
	Fail  bool // jobs end failed
	Slow  bool // jobs never end (for cancellation)
	// OutputURLs, when set, are the outputs of a finished prediction instead of two files
	// under /files/ (a test points them wherever an attacker would).
	OutputURLs []string
	mu         sync.Mutex
	polls      map[string]int
	Cancelled  []string
	Inputs     []map[string]any
	base       string
}

// ReplicateMetrics are the metrics of a succeeded prediction, as Replicate reports them.
func ReplicateMetrics() map[string]any { return map[string]any{"predict_time": 2.5, "total_time": 3.1} }

// RunPodUsage is the timing of a completed RunPod job, in ms, as RunPod reports it.
func RunPodUsage() map[string]any { return map[string]any{"executionTime": 1200, "delayTime": 300} }

// New returns fakes that accept token.
func New(token string) *Jobs { return &Jobs{Token: token, polls: map[string]int{}} }

// SetBase tells the fake its own URL, for the output URLs it hands out.
func (f *Jobs) SetBase(u string) { f.base = u }

func (f *Jobs) auth(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("Authorization") != "Bearer "+f.Token {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"detail":"Invalid token."}`))
		return false
	}
	return true
}

func (f *Jobs) create(r *http.Request) string {
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Inputs = append(f.Inputs, body)
	id := fmt.Sprintf("job%d", len(f.polls)+1)
	f.polls[id] = 0
	return id
}

// poll returns how far a job is: 0, 1 running, 2+ done.
func (f *Jobs) poll(id string) (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.polls[id]
	f.polls[id] = n + 1
	return n, ok
}

// Polls counts status requests so far, over all jobs.
func (f *Jobs) Polls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, p := range f.polls {
		n += p
	}
	return n
}

// CancelledIDs lists the jobs a client cancelled.
func (f *Jobs) CancelledIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.Cancelled...)
}

func (f *Jobs) cancel(id string) {
	f.mu.Lock()
	f.Cancelled = append(f.Cancelled, id)
	f.mu.Unlock()
}

// Handler serves Replicate under /replicate/v1 and RunPod under /runpod/v2, plus output files
// under /files/.
func (f *Jobs) Handler() http.Handler {
	mux := http.NewServeMux()
	pred := func(id, status string, output any) map[string]any {
		return map[string]any{"id": id, "status": status, "output": output, "error": nil,
			"urls": map[string]any{"get": f.base + "/replicate/v1/predictions/" + id}}
	}
	createPred := func(w http.ResponseWriter, r *http.Request) {
		if f.auth(w, r) {
			w.WriteHeader(http.StatusCreated)
			_ = json.NewEncoder(w).Encode(pred(f.create(r), "starting", nil))
		}
	}
	mux.HandleFunc("POST /replicate/v1/predictions", createPred)
	mux.HandleFunc("POST /replicate/v1/models/{owner}/{name}/predictions", createPred)
	mux.HandleFunc("GET /replicate/v1/predictions/{id}", func(w http.ResponseWriter, r *http.Request) {
		if !f.auth(w, r) {
			return
		}
		id := r.PathValue("id")
		n, ok := f.poll(id)
		switch {
		case !ok:
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"detail":"Not found."}`))
		case n < 2 || f.Slow:
			_ = json.NewEncoder(w).Encode(pred(id, "processing", nil))
		case f.Fail:
			p := pred(id, "failed", nil)
			p["error"] = "CUDA error: out of memory"
			_ = json.NewEncoder(w).Encode(p)
		case len(f.OutputURLs) > 0:
			out := []any{}
			for _, u := range f.OutputURLs {
				out = append(out, u)
			}
			_ = json.NewEncoder(w).Encode(pred(id, "succeeded", out))
		default:
			p := pred(id, "succeeded", []any{f.base + "/files/" + id + "-0.png", f.base + "/files/" + id + "-1.png"})
			p["metrics"] = ReplicateMetrics()
			_ = json.NewEncoder(w).Encode(p)
		}
	})
	mux.HandleFunc("POST /replicate/v1/predictions/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		if f.auth(w, r) {
			f.cancel(r.PathValue("id"))
			_ = json.NewEncoder(w).Encode(pred(r.PathValue("id"), "canceled", nil))
		}
	})
	mux.HandleFunc("GET /files/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		fmt.Fprintf(w, "\x89PNG\r\n\x1a\n%s", r.PathValue("name"))
	})
	mux.HandleFunc("POST /runpod/v2/{endpoint}/run", func(w http.ResponseWriter, r *http.Request) {
		if f.auth(w, r) {
			_ = json.NewEncoder(w).Encode(map[string]any{"id": f.create(r), "status": "IN_QUEUE"})
		}
	})
	mux.HandleFunc("GET /runpod/v2/{endpoint}/status/{id}", func(w http.ResponseWriter, r *http.Request) {
		if !f.auth(w, r) {
			return
		}
		id := r.PathValue("id")
		n, _ := f.poll(id)
		switch {
		case n < 2 || f.Slow:
			_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "status": "IN_PROGRESS"})
		case f.Fail:
			_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "status": "FAILED", "error": "handler raised ValueError"})
		default:
			out := map[string]any{"id": id, "status": "COMPLETED", "output": map[string]any{"text": "done"}}
			for k, v := range RunPodUsage() {
				out[k] = v
			}
			_ = json.NewEncoder(w).Encode(out)
		}
	})
	mux.HandleFunc("POST /runpod/v2/{endpoint}/cancel/{id}", func(w http.ResponseWriter, r *http.Request) {
		if f.auth(w, r) {
			f.cancel(r.PathValue("id"))
			_ = json.NewEncoder(w).Encode(map[string]any{"id": r.PathValue("id"), "status": "CANCELLED"})
		}
	})
	return mux
}
