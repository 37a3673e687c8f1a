// Package fakeopenai is an in-repo OpenAI API for tests: chat completions, image generation
// and background responses in the real shapes, plus the real failure modes on request (429
// with Retry-After, 5xx, malformed JSON, a refused key).
package fakeopenai

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
)

// Server is a fake OpenAI.
type Server struct {
	Key          string // the API key it accepts
	mu           sync.Mutex
	RateLimited  int  // answer this many requests with 429 Retry-After: 1 first (RateLimit while serving)
	Throttled    int  // 429s answered so far
	ServerErrors int  // then this many with 500
	Malformed    bool // answer 200 with a body that is not JSON
	Requests     int
	responses    map[string]int // response id → polls so far
	Cancelled    []string
	Edits        []Edit // image edit requests received
}

// Edit is one images/edits request as the fake received it.
type Edit struct {
	Model, Prompt string
	Images        []string // the content types of the image[] parts
}

// New returns a fake accepting key.
func New(key string) *Server { return &Server{Key: key, responses: map[string]int{}} }

// RateLimit makes the fake answer the next n requests with 429, while it serves.
func (s *Server) RateLimit(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.RateLimited = n
}

// FailNext makes the fake answer the next n requests with 500, while it serves.
func (s *Server) FailNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ServerErrors = n
}

// Answered429 returns how many 429s the fake answered.
func (s *Server) Answered429() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Throttled
}

// PNG is the image the fake generates.
var PNG = []byte("\x89PNG\r\n\x1a\nfake image bytes")

// ChatUsage is the usage of one chat completion, in OpenAI's shape (prompt and completion
// tokens; gpt-image-1 and the Responses API count input and output tokens instead).
func ChatUsage() map[string]any {
	return map[string]any{"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
}

// ImageUsage is the usage of one generated image.
func ImageUsage() map[string]any {
	return map[string]any{"total_tokens": 4210, "input_tokens": 50, "output_tokens": 4160,
		"input_tokens_details": map[string]any{"text_tokens": 50, "image_tokens": 0}}
}

// ResponseUsage is the usage of one background response.
func ResponseUsage() map[string]any {
	return map[string]any{"input_tokens": 36, "input_tokens_details": map[string]any{"cached_tokens": 0},
		"output_tokens": 87, "output_tokens_details": map[string]any{"reasoning_tokens": 0}, "total_tokens": 123}
}

func (s *Server) fault(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Requests++
	if r.Header.Get("Authorization") != "Bearer "+s.Key {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","code":"invalid_api_key"}}`,
			strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		return true
	}
	switch {
	case s.RateLimited > 0:
		s.RateLimited--
		s.Throttled++
		// OpenAI's 429: Retry-After, its x-ratelimit headers and the error object.
		h := w.Header()
		h.Set("Retry-After", "1")
		h.Set("X-Ratelimit-Limit-Requests", "500")
		h.Set("X-Ratelimit-Remaining-Requests", "0")
		h.Set("X-Ratelimit-Reset-Requests", "1s")
		h.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-fake on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 1s.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`))
		return true
	case s.ServerErrors > 0:
		s.ServerErrors--
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"error":{"message":"The server had an error while processing your request.","type":"server_error"}}`))
		return true
	case s.Malformed:
		_, _ = w.Write([]byte(`{"id": "chatcmpl-1", "choices": [`))
		return true
	}
	return false
}

// Handler serves the API under /v1.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		if s.fault(w, r) {
			return
		}
		var req struct {
			Model    string `json:"model"`
			Messages []struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"messages"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		last := ""
		if n := len(req.Messages); n > 0 {
			last = req.Messages[n-1].Content
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": "chatcmpl-1", "object": "chat.completion", "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": "echo: " + last}}},
			"usage": ChatUsage(),
		})
	})
	mux.HandleFunc("POST /v1/images/generations", func(w http.ResponseWriter, r *http.Request) {
		if s.fault(w, r) {
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"created": 1, "data": []any{map[string]any{
			"b64_json": base64.StdEncoding.EncodeToString(PNG), "revised_prompt": "a cat"}}, "usage": ImageUsage()})
	})
	// Image edits take multipart forms: model, prompt, n, size, quality and image[] files, as
	// the real endpoint does; a form without a prompt or an image is refused with its 400.
	mux.HandleFunc("POST /v1/images/edits", func(w http.ResponseWriter, r *http.Request) {
		if s.fault(w, r) {
			return
		}
		if err := r.ParseMultipartForm(32 << 20); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":{"message":"Invalid multipart body: %s","type":"invalid_request_error"}}`, err)
			return
		}
		files := r.MultipartForm.File["image[]"]
		if r.FormValue("prompt") == "" || len(files) == 0 {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":{"message":"Missing required parameter: 'prompt' or 'image'.","type":"invalid_request_error"}}`))
			return
		}
		e := Edit{Model: r.FormValue("model"), Prompt: r.FormValue("prompt")}
		for _, f := range files {
			e.Images = append(e.Images, f.Header.Get("Content-Type"))
		}
		s.mu.Lock()
		s.Edits = append(s.Edits, e)
		s.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"created": 1, "data": []any{map[string]any{
			"b64_json": base64.StdEncoding.EncodeToString(PNG)}}})
	})
	mux.HandleFunc("POST /v1/responses", func(w http.ResponseWriter, r *http.Request) {
		if s.fault(w, r) {
			return
		}
		s.mu.Lock()
		id := fmt.Sprintf("resp_%d", len(s.responses)+1)
		s.responses[id] = 0
		s.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "object": "response", "status": "queued", "background": true})
	})
	mux.HandleFunc("GET /v1/responses/{id}", func(w http.ResponseWriter, r *http.Request) {
		if s.fault(w, r) {
			return
		}
		id := r.PathValue("id")
		s.mu.Lock()
		polls, ok := s.responses[id]
		s.responses[id] = polls + 1
		s.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":{"message":"No response found"}}`))
			return
		}
		if polls < 2 {
			_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "status": "in_progress"})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "status": "completed", "output": []any{
			map[string]any{"type": "message", "content": []any{map[string]any{"type": "output_text", "text": "the answer"}}}},
			"usage": ResponseUsage()})
	})
	mux.HandleFunc("POST /v1/responses/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.Cancelled = append(s.Cancelled, r.PathValue("id"))
		s.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"id": r.PathValue("id"), "status": "cancelled"})
	})
	return mux
}
