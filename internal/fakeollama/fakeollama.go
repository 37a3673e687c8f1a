// Package fakeollama is an in-repo Ollama server for tests. It speaks Ollama's real HTTP API:
// /api/generate and /api/chat streaming NDJSON (or one JSON object with "stream": false),
// /api/embed (and the older /api/embeddings), /api/pull streaming its progress, /api/tags and
// /api/version, and its error shapes: {"error": "..."} with 404 for a model that is not pulled,
// 400 for a bad request, and an error line in the middle of a stream.
//
// Its "model" answers deterministically: the reply to a prompt is "echo: " followed by the
// prompt's words, one token per word, cut by options.num_predict and options.stop.
package fakeollama

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Version is what /api/version and `ollama --version` report.
const Version = "0.12.3"

// Missing is the prefix of model names the fake's registry does not have: pulling one fails
// the way Ollama does ("pull model manifest: file does not exist").
const Missing = "no-such-"

// Server is a fake Ollama daemon.
type Server struct {
	dir string // where pulled models are remembered (OLLAMA_MODELS); "" keeps them in memory

	mu       sync.Mutex
	models   map[string]bool
	requests map[string][]map[string]any // request bodies by path
	// FailNext answers the next generate or chat request with a 500 error.
	FailNext bool
	// FailMidStream sends an error line after the second token of the next generation.
	FailMidStream bool
	// Hold, when set, makes generations wait after their first token until it is closed or the
	// client goes away (for cancellation tests); Aborted counts generations the client left.
	Hold    chan struct{}
	aborted int
}

// New returns a fake that remembers pulled models in dir ("" for memory only), with the given
// models already pulled.
func New(dir string, pulled ...string) *Server {
	s := &Server{dir: dir, models: map[string]bool{}, requests: map[string][]map[string]any{}}
	for _, m := range pulled {
		s.models[Canonical(m)] = true
	}
	if dir != "" {
		entries, _ := os.ReadDir(filepath.Join(dir, "fake-manifests"))
		for _, e := range entries {
			s.models[strings.ReplaceAll(e.Name(), "@", ":")] = true
		}
	}
	return s
}

// Canonical adds Ollama's default tag: "llama3.2" is "llama3.2:latest".
func Canonical(name string) string {
	if name == "" || strings.Contains(name[strings.LastIndex(name, "/")+1:], ":") {
		return name
	}
	return name + ":latest"
}

// Requests returns the bodies received on path, oldest first.
func (s *Server) Requests(path string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests[path])
}

// Aborted counts generations whose client went away before the end.
func (s *Server) Aborted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.aborted
}

// Pulled lists the models present, sorted.
func (s *Server) Pulled() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for m := range s.models {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

// Handler serves the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/version", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"version": Version})
	})
	mux.HandleFunc("GET /api/tags", s.tags)
	mux.HandleFunc("POST /api/pull", s.pull)
	mux.HandleFunc("POST /api/generate", s.generate)
	mux.HandleFunc("POST /api/chat", s.generate)
	mux.HandleFunc("POST /api/embed", s.embed)
	mux.HandleFunc("POST /api/embeddings", s.embed)
	mux.HandleFunc("GET /", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("Ollama is running")) })
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// decode reads a request body and records it.
func (s *Server) decode(w http.ResponseWriter, r *http.Request) (map[string]any, bool) {
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		fail(w, http.StatusBadRequest, "invalid character in request body: "+err.Error())
		return nil, false
	}
	s.mu.Lock()
	s.requests[r.URL.Path] = append(s.requests[r.URL.Path], body)
	s.mu.Unlock()
	return body, true
}

func (s *Server) tags(w http.ResponseWriter, _ *http.Request) {
	var list []map[string]any
	for _, m := range s.Pulled() {
		list = append(list, map[string]any{
			"name": m, "model": m, "modified_at": time.Unix(1700000000, 0).UTC().Format(time.RFC3339Nano),
			"size": 1 << 20, "digest": digest(m),
			"details": map[string]any{"format": "gguf", "family": "llama", "families": []string{"llama"},
				"parameter_size": "1.2B", "quantization_level": "Q8_0"},
		})
	}
	if list == nil {
		list = []map[string]any{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": list})
}

func digest(name string) string {
	sum := sha256.Sum256([]byte(name))
	return fmt.Sprintf("%x", sum)
}

// streaming reports whether the request asks for a stream (Ollama's default).
func streaming(body map[string]any) bool {
	v, ok := body["stream"].(bool)
	return !ok || v
}

func modelName(body map[string]any) string {
	if m, _ := body["model"].(string); m != "" {
		return m
	}
	m, _ := body["name"].(string) // the older field of /api/pull
	return m
}

// pull streams the progress of a model download: the manifest, two layers in chunks, the
// digest check, the manifest write, then success.
func (s *Server) pull(w http.ResponseWriter, r *http.Request) {
	body, ok := s.decode(w, r)
	if !ok {
		return
	}
	name := Canonical(modelName(body))
	if name == "" {
		fail(w, http.StatusBadRequest, "model is required")
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	flush := func() {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	_ = enc.Encode(map[string]any{"status": "pulling manifest"})
	flush()
	if strings.HasPrefix(name, Missing) {
		_ = enc.Encode(map[string]any{"error": "pull model manifest: file does not exist"})
		return
	}
	layers := []struct {
		digest string
		total  int64
	}{{"sha256:" + digest(name+"weights"), 4 << 20}, {"sha256:" + digest(name+"template"), 1 << 10}}
	for _, l := range layers {
		for done := int64(0); ; done += l.total / 4 {
			done = min(done, l.total)
			_ = enc.Encode(map[string]any{"status": "pulling " + l.digest[7:19], "digest": l.digest, "total": l.total, "completed": done})
			flush()
			if done == l.total || r.Context().Err() != nil {
				break
			}
		}
	}
	for _, st := range []string{"verifying sha256 digest", "writing manifest"} {
		_ = enc.Encode(map[string]any{"status": st})
	}
	s.mu.Lock()
	s.models[name] = true
	s.mu.Unlock()
	if s.dir != "" {
		dir := filepath.Join(s.dir, "fake-manifests")
		_ = os.MkdirAll(dir, 0o755)
		_ = os.WriteFile(filepath.Join(dir, strings.ReplaceAll(name, ":", "@")), []byte(name), 0o644)
	}
	_ = enc.Encode(map[string]any{"status": "success"})
}

func (s *Server) has(model string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.models[Canonical(model)]
}

// reply is the text the fake "model" answers with, as tokens.
func reply(prompt string, options map[string]any) (tokens []string, reason string) {
	words := append([]string{"echo:"}, strings.Fields(prompt)...)
	limit := -1
	if n, ok := options["num_predict"].(float64); ok && n >= 0 {
		limit = int(n)
	}
	var stops []string
	switch st := options["stop"].(type) {
	case []any:
		for _, x := range st {
			if s, ok := x.(string); ok {
				stops = append(stops, s)
			}
		}
	}
	reason = "stop"
	for i, w := range words {
		if slices.Contains(stops, w) {
			break
		}
		if limit >= 0 && len(tokens) == limit {
			reason = "length"
			break
		}
		if i > 0 {
			w = " " + w
		}
		tokens = append(tokens, w)
	}
	return tokens, reason
}

// generate serves /api/generate and /api/chat.
func (s *Server) generate(w http.ResponseWriter, r *http.Request) {
	body, ok := s.decode(w, r)
	if !ok {
		return
	}
	chat := r.URL.Path == "/api/chat"
	model := modelName(body)
	if model == "" {
		fail(w, http.StatusBadRequest, "model is required")
		return
	}
	if !s.has(model) {
		fail(w, http.StatusNotFound, fmt.Sprintf("model %q not found, try pulling it first", model))
		return
	}
	s.mu.Lock()
	failNow, failMid, hold := s.FailNext, s.FailMidStream, s.Hold
	s.FailNext, s.FailMidStream = false, false
	s.mu.Unlock()
	if failNow {
		fail(w, http.StatusInternalServerError, "llama runner process has terminated: exit status 2")
		return
	}
	prompt, _ := body["prompt"].(string)
	if chat {
		msgs, ok := body["messages"].([]any)
		if !ok {
			fail(w, http.StatusBadRequest, "messages is required")
			return
		}
		for _, m := range msgs { // the model answers the last user message
			if mm, ok := m.(map[string]any); ok && mm["role"] == "user" {
				prompt, _ = mm["content"].(string)
			}
		}
	}
	options, _ := body["options"].(map[string]any)
	tokens, reason := reply(prompt, options)
	created := time.Now().UTC().Format(time.RFC3339Nano)
	chunk := func(tok string) map[string]any {
		c := map[string]any{"model": model, "created_at": created, "done": false}
		if chat {
			c["message"] = map[string]any{"role": "assistant", "content": tok}
		} else {
			c["response"] = tok
		}
		return c
	}
	final := func(text string) map[string]any {
		c := chunk(text)
		c["done"], c["done_reason"] = true, reason
		c["total_duration"], c["load_duration"] = 1200000, 300000
		c["prompt_eval_count"], c["prompt_eval_duration"] = len(strings.Fields(prompt)), 200000
		c["eval_count"], c["eval_duration"] = len(tokens), 700000
		if !chat {
			c["context"] = []int{1, 2, 3}
		}
		return c
	}
	if !streaming(body) {
		writeJSON(w, http.StatusOK, final(strings.Join(tokens, "")))
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	for i, tok := range tokens {
		_ = enc.Encode(chunk(tok))
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		if failMid && i == 1 {
			_ = enc.Encode(map[string]any{"error": "an error was encountered while running the model: unexpected EOF"})
			return
		}
		if hold != nil && i == 0 {
			select {
			case <-hold:
			case <-r.Context().Done():
				s.mu.Lock()
				s.aborted++
				s.mu.Unlock()
				return
			}
		}
	}
	_ = enc.Encode(final(""))
}

// embed serves /api/embed ({model, input: string | [string]} → {embeddings: [[…]]}) and the
// older /api/embeddings ({model, prompt} → {embedding: […]}).
func (s *Server) embed(w http.ResponseWriter, r *http.Request) {
	body, ok := s.decode(w, r)
	if !ok {
		return
	}
	model := modelName(body)
	if !s.has(model) {
		fail(w, http.StatusNotFound, fmt.Sprintf("model %q not found, try pulling it first", model))
		return
	}
	if r.URL.Path == "/api/embeddings" {
		p, _ := body["prompt"].(string)
		writeJSON(w, http.StatusOK, map[string]any{"embedding": Vector(p)})
		return
	}
	var inputs []string
	switch in := body["input"].(type) {
	case string:
		inputs = []string{in}
	case []any:
		for _, x := range in {
			s, ok := x.(string)
			if !ok {
				fail(w, http.StatusBadRequest, "invalid input type")
				return
			}
			inputs = append(inputs, s)
		}
	default:
		fail(w, http.StatusBadRequest, "invalid input type")
		return
	}
	vecs := make([][]float64, len(inputs))
	for i, in := range inputs {
		vecs[i] = Vector(in)
	}
	writeJSON(w, http.StatusOK, map[string]any{"model": model, "embeddings": vecs,
		"total_duration": 140000, "load_duration": 20000, "prompt_eval_count": len(inputs)})
}

// Vector is the fake's embedding of a text: 8 numbers from its hash, normalised.
func Vector(text string) []float64 {
	sum := sha256.Sum256([]byte(text))
	v := make([]float64, 8)
	var norm float64
	for i := range v {
		v[i] = float64(int32(binary.BigEndian.Uint32(sum[i*4:]))) / math.MaxInt32
		norm += v[i] * v[i]
	}
	for i := range v {
		v[i] /= math.Sqrt(norm)
	}
	return v
}
