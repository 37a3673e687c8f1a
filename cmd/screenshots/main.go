// Command screenshots renders the console's main screens into PNGs (`make screenshots`): it
// runs a real machine in-process (embedded broker, simulated GPUs, a supervised service),
// submits work, and draws what the console shows with the pure-Go terminal renderer.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"image/png"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/core/machine"
	"github.com/emp-job-queue/machine/internal/termshot"
	"github.com/emp-job-queue/machine/tui"
)

func main() {
	out := flag.String("out", "screenshots", "directory for the PNGs")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "screenshots:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	dir, err := os.MkdirTemp("", "machine-screens")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	services := filepath.Join(dir, "services.json")
	svc := `[{"name":"comfyui-gpu0","command":["sh","-c","i=0; while true; i=$((i+1)); do echo \"got prompt $i\"; echo \"Prompt executed in 1.$i seconds\"; sleep 0.1; done"],"port":8188}]`
	if err := os.WriteFile(services, []byte(svc), 0o600); err != nil {
		return err
	}
	// A model catalogue served over local HTTP, so the model cache and the Decisions view have
	// something real to show.
	models := map[string][]byte{}
	var entries []map[string]any
	for i, name := range []string{"sdxl-base.safetensors", "detail-lora.safetensors", "flux-dev.safetensors"} {
		body := bytes.Repeat([]byte{byte('a' + i)}, (i+1)<<20)
		models["/"+name] = body
		sum := sha256.Sum256(body)
		entries = append(entries, map[string]any{"name": name, "size": len(body), "sha256": hex.EncodeToString(sum[:]), "kind": "checkpoints"})
	}
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := models[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, r.URL.Path, time.Time{}, bytes.NewReader(body))
	}))
	defer files.Close()
	for _, e := range entries {
		e["url"] = files.URL + "/" + e["name"].(string)
	}
	catalog, err := json.Marshal(map[string]any{"models": entries})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "catalog.json"), catalog, 0o600); err != nil {
		return err
	}
	env := map[string]string{
		"MACHINE_AUTOSCALE_BOUNDS": "mock:1-3", "MACHINE_MODEL_CACHE_GB": "1", "MACHINE_MODEL_CATALOG": filepath.Join(dir, "catalog.json"),
		"MACHINE_MODEL_CACHE_DIR": filepath.Join(dir, "models"),
		"MACHINE_ID":              "gpu-box-17", "MACHINE_POOL": "fast", "WORKER_CONNECTORS": "simulation,mock", "MACHINE_GPU_COUNT": "2",
		"MACHINE_GPU_MODEL": "NVIDIA H200 141GB HBM3e", "MACHINE_GPU_MEMORY_GB": "141", "MACHINE_HEALTH_PORT": "0",
		"MACHINE_RUN_DIR": dir, "MACHINE_LOG_DIR": filepath.Join(dir, "logs"), "MACHINE_SERVICES_FILE": services,
		"MACHINE_GPU_SAMPLE_INTERVAL_MS": "100", "WORKER_SIMULATION_PROCESSING_TIME": "20", "WORKER_SIMULATION_STEPS": "40",
	}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		return err
	}
	m, err := machine.New(cfg, machine.Options{Version: "screens", Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	core := m.Control()
	for core.Snapshot().Machine.Phase != "ready" {
		time.Sleep(50 * time.Millisecond)
	}
	data, err := os.ReadFile(filepath.Join(dir, "broker.url"))
	if err != nil {
		return err
	}
	opts, err := redis.ParseURL(string(data[:len(data)-1]))
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	b := broker.New(rdb)
	for _, spec := range []broker.JobSpec{
		{Service: "mock", Payload: json.RawMessage(`{"delay_ms":50}`)},
		{Service: "mock", Payload: json.RawMessage(`{"delay_ms":50,"should_fail":true}`), MaxRetries: new(1)},
		{Service: "simulation", Payload: json.RawMessage(`{"model":"sdxl-base.safetensors"}`)},
		{Service: "simulation", Payload: json.RawMessage(`{"model":"detail-lora.safetensors"}`)},
		{Service: "simulation"},
		{Service: "mock", Payload: json.RawMessage(`{"delay_ms":8000}`)}, {Service: "mock", Payload: json.RawMessage(`{"delay_ms":8000}`)},
	} {
		if _, err := b.Submit(ctx, spec); err != nil {
			return err
		}
	}
	time.Sleep(12 * time.Second) // GPU history fills, jobs progress, the autoscaler decides once
	snap := core.Snapshot()
	logs := core.Do(ctx, control.Command{Op: control.Logs, Service: "comfyui-gpu0", Lines: 200}).Lines
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	shots := []struct {
		name   string
		screen tui.Screen
		w, h   int
	}{
		{"main-160x48", tui.MainScreen, 160, 48}, {"main-80x24", tui.MainScreen, 80, 24}, {"main-240x67", tui.MainScreen, 240, 67},
		{"logs-120x32", tui.LogsScreen, 120, 32}, {"help-100x30", tui.HelpScreen, 100, 30},
	}
	for _, s := range shots {
		if err := write(out, s.name, tui.Frame(snap, s.screen, "comfyui-gpu0", logs, s.w, s.h), s.w, s.h); err != nil {
			return err
		}
	}
	// A describe view: the job in flight, or the latest finished one.
	job := ""
	if len(snap.Jobs) > 0 {
		job = snap.Jobs[0].ID
	} else if len(snap.Recent) > 0 {
		job = snap.Recent[len(snap.Recent)-1].ID
	}
	if err := write(out, "describe-job-120x40", tui.DescribeFrame(snap, tui.DescribeJob, job, 120, 40), 120, 40); err != nil {
		return err
	}
	return write(out, "decisions-120x40", tui.DescribeFrame(snap, tui.DescribeDecisions, "", 120, 40), 120, 40)
}

// write draws a frame as out/name.png.
func write(out, name, frame string, w, h int) error {
	img := termshot.PNG(termshot.Screen(frame, w, h), w, h)
	f, err := os.Create(filepath.Join(out, name+".png"))
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Println("wrote", filepath.Join(out, name+".png"))
	return nil
}
