// Package fakea1111 is an in-repo AUTOMATIC1111 WebUI API for tests, speaking its real shapes:
// POST /sdapi/v1/txt2img and /sdapi/v1/img2img answer {images (base64 PNG), parameters, info (a
// JSON string)} after stepping through the sampling steps, GET /sdapi/v1/progress reports them
// as A1111 does, POST /sdapi/v1/interrupt stops the generation (A1111 then still answers 200 with
// what it had), and errors come in A1111's and FastAPI's shapes (404 for an unknown sampler,
// 422 for a bad body, 500 with {error, detail, body, errors}). Like A1111, it runs one
// generation at a time.
package fakea1111

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// PNG is the image the fake generates.
var PNG = []byte("\x89PNG\r\n\x1a\nfake a1111 image")

// Server is a fake A1111 instance.
type Server struct {
	StepDelay time.Duration // how long one sampling step takes (default 2 ms)

	gen sync.Mutex // one generation at a time, as A1111's queue lock

	mu          sync.Mutex
	step, steps int
	jobCount    int
	interrupted bool
	interrupts  int
	requests    []map[string]any
	// FailNext answers the next generation with a 500, as a CUDA out-of-memory does.
	FailNext bool
	// Hold, when set, stops every generation after its first step until it is closed or the
	// generation is interrupted (for cancellation tests).
	Hold chan struct{}
}

// New returns a fake.
func New() *Server { return &Server{StepDelay: 2 * time.Millisecond} }

// Requests returns the generation bodies received, oldest first.
func (s *Server) Requests() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.requests...)
}

// Interrupts counts calls of /sdapi/v1/interrupt.
func (s *Server) Interrupts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.interrupts
}

var samplers = map[string]bool{"Euler a": true, "Euler": true, "DPM++ 2M": true, "DPM++ 2M Karras": true, "DDIM": true, "UniPC": true}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Handler serves the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /sdapi/v1/options", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, map[string]any{"sd_model_checkpoint": "v1-5-pruned-emaonly.safetensors [6ce0161689]", "samples_format": "png"})
	})
	mux.HandleFunc("GET /sdapi/v1/sd-models", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, []any{map[string]any{"title": "v1-5-pruned-emaonly.safetensors [6ce0161689]", "model_name": "v1-5-pruned-emaonly",
			"hash": "6ce0161689", "filename": "/workspace/a1111/models/Stable-diffusion/v1-5-pruned-emaonly.safetensors"}})
	})
	mux.HandleFunc("GET /sdapi/v1/progress", s.progress)
	mux.HandleFunc("POST /sdapi/v1/interrupt", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		s.interrupts++
		if s.steps > 0 {
			s.interrupted = true
		}
		s.mu.Unlock()
		writeJSON(w, 200, map[string]any{})
	})
	mux.HandleFunc("POST /sdapi/v1/txt2img", func(w http.ResponseWriter, r *http.Request) { s.generate(w, r, false) })
	mux.HandleFunc("POST /sdapi/v1/img2img", func(w http.ResponseWriter, r *http.Request) { s.generate(w, r, true) })
	return mux
}

func (s *Server) progress(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := 0.0
	if s.steps > 0 {
		p = float64(s.step) / float64(s.steps)
	}
	writeJSON(w, 200, map[string]any{
		"progress": p, "eta_relative": float64(s.steps-s.step) * s.StepDelay.Seconds(),
		"state": map[string]any{"skipped": false, "interrupted": s.interrupted, "job": "", "job_count": s.jobCount,
			"job_timestamp": "20250101000000", "job_no": 0, "sampling_step": s.step, "sampling_steps": s.steps},
		"current_image": nil, "textinfo": nil,
	})
}

// validation answers like FastAPI does for a body that does not fit the model.
func validation(w http.ResponseWriter, field, msg, typ string) {
	writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"detail": []any{map[string]any{"loc": []any{"body", field}, "msg": msg, "type": typ}}})
}

func (s *Server) generate(w http.ResponseWriter, r *http.Request, img2img bool) {
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"detail": []any{map[string]any{"loc": []any{"body", 0}, "msg": "Expecting value", "type": "value_error.jsondecode"}}})
		return
	}
	s.mu.Lock()
	s.requests = append(s.requests, body)
	fail, hold := s.FailNext, s.Hold
	s.FailNext = false
	s.mu.Unlock()
	steps := 20
	if v, ok := body["steps"]; ok {
		f, isNum := v.(float64)
		if !isNum || f < 1 {
			validation(w, "steps", "value is not a valid integer", "type_error.integer")
			return
		}
		steps = int(f)
	}
	if name, ok := body["sampler_name"].(string); ok && !samplers[name] {
		writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Sampler not found"})
		return
	}
	if img2img {
		if imgs, _ := body["init_images"].([]any); len(imgs) == 0 {
			validation(w, "init_images", "field required", "value_error.missing")
			return
		}
	}
	if fail {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"error": "OutOfMemoryError", "detail": "", "body": "",
			"errors": "CUDA out of memory. Tried to allocate 2.00 GiB"})
		return
	}
	count := 1
	for _, k := range []string{"batch_size", "n_iter"} {
		if f, ok := body[k].(float64); ok && f > 1 {
			count *= int(f)
		}
	}

	s.gen.Lock()
	defer s.gen.Unlock()
	s.mu.Lock()
	s.step, s.steps, s.jobCount, s.interrupted = 0, steps, count, false
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.step, s.steps, s.jobCount = 0, 0, 0
		s.mu.Unlock()
	}()
	for i := 1; i <= steps; i++ {
		time.Sleep(s.StepDelay)
		s.mu.Lock()
		s.step = i
		stop := s.interrupted
		s.mu.Unlock()
		if stop {
			break
		}
		if hold != nil && i == 1 {
			for waiting := true; waiting; {
				select {
				case <-hold:
					waiting = false
				case <-time.After(5 * time.Millisecond):
					s.mu.Lock()
					waiting = !s.interrupted
					s.mu.Unlock()
				}
			}
		}
	}
	images := make([]string, count)
	for i := range images {
		images[i] = base64.StdEncoding.EncodeToString(PNG)
	}
	seed := 1234567
	if f, ok := body["seed"].(float64); ok && f >= 0 {
		seed = int(f)
	}
	info, _ := json.Marshal(map[string]any{"prompt": body["prompt"], "seed": seed, "all_seeds": []int{seed}, "steps": steps,
		"sampler_name": body["sampler_name"], "sd_model_name": "v1-5-pruned-emaonly", "infotexts": []string{fmt.Sprintf("%v\nSteps: %d, Seed: %d", body["prompt"], steps, seed)}})
	writeJSON(w, 200, map[string]any{"images": images, "parameters": body, "info": string(info)})
}
