// Package fakegemini is an in-repo Gemini API (generativelanguage.googleapis.com) for tests:
// models/{model}:generateContent in the real shapes (candidates whose parts carry text and
// inlineData base64 images, usageMetadata), the key in x-goog-api-key, and the real failure
// modes on request: 429 RESOURCE_EXHAUSTED, 500 INTERNAL, 400 INVALID_ARGUMENT for a bad key
// or request, a prompt blocked for safety, an answer with text and no image.
package fakegemini

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
)

// PNG is the image the fake generates.
var PNG = []byte("\x89PNG\r\n\x1a\nfake gemini image")

// JPEG is the input image the fake serves at /images/cat.jpg.
var JPEG = []byte("\xff\xd8\xff\xe0fake cat photo")

// Server is a fake Gemini API.
type Server struct {
	Key string // the API key it accepts

	mu           sync.Mutex
	RateLimited  int  // answer this many requests with 429 first
	ServerErrors int  // then this many with 500
	Blocked      bool // block the prompt for safety (200, no candidates)
	TextOnly     bool // answer with text and no image
	requests     []map[string]any
}

// New returns a fake accepting key.
func New(key string) *Server { return &Server{Key: key} }

// Requests returns the generateContent bodies received, oldest first.
func (s *Server) Requests() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.requests...)
}

func apiError(w http.ResponseWriter, code int, status, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "message": msg, "status": status}})
}

// Handler serves the API and a sample input image.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /images/cat.jpg", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		_, _ = w.Write(JPEG)
	})
	mux.HandleFunc("POST /v1beta/models/{call}", s.generate)
	return mux
}

func (s *Server) generate(w http.ResponseWriter, r *http.Request) {
	model, method, _ := strings.Cut(r.PathValue("call"), ":")
	if method != "generateContent" {
		apiError(w, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("models/%s is not found for API version v1beta, or is not supported for %s.", model, method))
		return
	}
	if r.Header.Get("x-goog-api-key") != s.Key {
		apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.")
		return
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Invalid JSON payload received. "+err.Error())
		return
	}
	s.mu.Lock()
	s.requests = append(s.requests, body)
	rate, fail, blocked, textOnly := s.RateLimited > 0, s.RateLimited == 0 && s.ServerErrors > 0, s.Blocked, s.TextOnly
	if rate {
		s.RateLimited--
	} else if fail {
		s.ServerErrors--
	}
	s.mu.Unlock()
	switch {
	case rate:
		apiError(w, http.StatusTooManyRequests, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")
		return
	case fail:
		apiError(w, http.StatusInternalServerError, "INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting")
		return
	}
	contents, _ := body["contents"].([]any)
	if len(contents) == 0 {
		apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified")
		return
	}
	usage := map[string]any{"promptTokenCount": 12, "candidatesTokenCount": 1290, "totalTokenCount": 1302}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	if blocked {
		_ = json.NewEncoder(w).Encode(map[string]any{"promptFeedback": map[string]any{"blockReason": "PROHIBITED_CONTENT"},
			"usageMetadata": usage, "modelVersion": model})
		return
	}
	parts := []any{map[string]any{"text": "Here is the image you asked for."}}
	if !textOnly {
		parts = append(parts, map[string]any{"inlineData": map[string]any{"mimeType": "image/png", "data": base64.StdEncoding.EncodeToString(PNG)}})
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"candidates":    []any{map[string]any{"content": map[string]any{"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}},
		"usageMetadata": usage, "modelVersion": model, "responseId": "resp-1",
	})
}
