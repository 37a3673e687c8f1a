// Package fakecomfy is an in-repo ComfyUI that speaks the stock server's API shapes and errors
// (POST /prompt, the /ws message stream, /history/{id}, /view, /interrupt, /queue,
// /system_stats) and can misbehave on request: reject a workflow, fail with 500, go silent on
// the websocket, fail during execution, or vanish mid-prompt.
package fakecomfy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Behaviour of the next prompts.
type Behaviour struct {
	Steps       int           // progress steps (default 4)
	StepEvery   time.Duration // default 20 ms
	Reject      bool          // 400 with node_errors, as for an invalid workflow
	ServerError bool          // 500
	Silent      bool          // send nothing on the websocket; the history still completes
	FailWith    string        // execution_error with this exception message
	Vanish      bool          // after accepting the prompt, drop every connection and refuse new ones
}

// Server is a fake ComfyUI.
type Server struct {
	mu         sync.Mutex
	Behaviour  Behaviour
	prompts    []map[string]any
	interrupts int
	history    map[string]any
	clients    map[string]*websocket.Conn
	gone       bool
	next       int
}

// New returns a fake with the default behaviour.
func New() *Server {
	return &Server{history: map[string]any{}, clients: map[string]*websocket.Conn{}}
}

// Prompts returns the bodies of the POST /prompt requests received.
func (s *Server) Prompts() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.prompts...)
}

// Interrupts counts POST /interrupt requests.
func (s *Server) Interrupts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.interrupts
}

// Handler serves the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.ws)
	mux.HandleFunc("POST /prompt", s.prompt)
	mux.HandleFunc("GET /history/{id}", s.historyOf)
	mux.HandleFunc("GET /view", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		fmt.Fprintf(w, "PNG bytes of %s", r.URL.Query().Get("filename"))
	})
	mux.HandleFunc("POST /interrupt", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.interrupts++
		s.mu.Unlock()
	})
	mux.HandleFunc("POST /queue", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("GET /system_stats", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"system":{"os":"posix","comfyui_version":"0.3.40"},"devices":[]}`))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		gone := s.gone
		s.mu.Unlock()
		if gone {
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (s *Server) ws(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	id := r.URL.Query().Get("clientId")
	s.mu.Lock()
	s.clients[id] = c
	s.mu.Unlock()
	_ = s.send(c, "status", map[string]any{"status": map[string]any{"exec_info": map[string]any{"queue_remaining": 0}}, "sid": id})
	// Hold the connection until the client goes.
	for {
		if _, _, err := c.Read(context.Background()); err != nil {
			return
		}
	}
}

func (s *Server) send(c *websocket.Conn, typ string, data any) error {
	b, _ := json.Marshal(map[string]any{"type": typ, "data": data})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return c.Write(ctx, websocket.MessageText, b)
}

func (s *Server) prompt(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, `{"error":{"type":"invalid_prompt","message":"Invalid prompt"}}`, http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.prompts = append(s.prompts, body)
	b := s.Behaviour
	s.next++
	id := fmt.Sprintf("prompt-%d", s.next)
	client := s.clients[fmt.Sprint(body["client_id"])]
	s.mu.Unlock()
	switch {
	case b.ServerError:
		http.Error(w, "Internal Server Error", http.StatusInternalServerError)
		return
	case b.Reject:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":{"type":"prompt_outputs_failed_validation","message":"Prompt outputs failed validation","details":""},` +
			`"node_errors":{"4":{"errors":[{"type":"value_not_in_list","message":"Value not in list","details":"ckpt_name: 'missing.safetensors' not in []"}],"class_type":"CheckpointLoaderSimple"}}}`))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprintf(w, `{"prompt_id":%q,"number":%d,"node_errors":{}}`, id, s.next)
	go s.execute(id, client, b)
}

func (s *Server) execute(id string, c *websocket.Conn, b Behaviour) {
	if b.Steps <= 0 {
		b.Steps = 4
	}
	if b.StepEvery <= 0 {
		b.StepEvery = 20 * time.Millisecond
	}
	if b.Vanish {
		time.Sleep(b.StepEvery)
		s.mu.Lock()
		s.gone = true
		for _, cl := range s.clients {
			_ = cl.CloseNow()
		}
		s.mu.Unlock()
		return
	}
	say := func(typ string, data map[string]any) {
		if c != nil && !b.Silent {
			data["prompt_id"] = id
			_ = s.send(c, typ, data)
		}
	}
	say("execution_start", map[string]any{"timestamp": time.Now().UnixMilli()})
	say("executing", map[string]any{"node": "3", "display_node": "3"})
	for i := 1; i <= b.Steps; i++ {
		time.Sleep(b.StepEvery)
		say("progress", map[string]any{"value": i, "max": b.Steps, "node": "3"})
	}
	if b.FailWith != "" {
		say("execution_error", map[string]any{"node_id": "3", "node_type": "KSampler", "exception_message": b.FailWith,
			"exception_type": "torch.OutOfMemoryError", "traceback": []string{"..."}})
		s.record(id, map[string]any{"outputs": map[string]any{}, "status": map[string]any{"status_str": "error", "completed": false}})
		return
	}
	s.record(id, map[string]any{
		"prompt":  []any{1, id, map[string]any{}},
		"outputs": map[string]any{"9": map[string]any{"images": []any{map[string]any{"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"}}}},
		"status":  map[string]any{"status_str": "success", "completed": true, "messages": []any{}},
	})
	say("executed", map[string]any{"node": "9", "output": map[string]any{"images": []any{}}})
	say("execution_success", map[string]any{"timestamp": time.Now().UnixMilli()})
	say("executing", map[string]any{"node": nil})
}

func (s *Server) record(id string, entry map[string]any) {
	s.mu.Lock()
	s.history[id] = entry
	s.mu.Unlock()
}

func (s *Server) historyOf(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	entry, ok := s.history[id]
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		_, _ = w.Write([]byte("{}"))
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{id: entry})
}
