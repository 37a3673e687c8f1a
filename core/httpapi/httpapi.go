// Package httpapi serves the machine's HTTP routes on MACHINE_HEALTH_PORT (PROTOCOL §6):
// /health, /ready, /status, /refresh-status, /metrics, and the supervisor routes the monitor
// calls. Routes that change state or show logs need MACHINE_API_TOKEN and are off without it.
// Server bounds what clients can hold: timeouts and a cap on connections.
package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/emp-job-queue/machine/core/connectors/throttle"
	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/gpu"
)

// Params builds the handler. Every field is immutable after New.
type Params struct {
	Store   *state.Store
	Metrics http.Handler
	Refresh func() // asks the status publisher for an immediate publish
	Token   string // MACHINE_API_TOKEN: opens the guarded routes; empty: they are off
	Version string
	// Services are the supervised services; nil when the machine runs none.
	Services Services
	// Do runs a console command: the connector route goes through it, so its checks are the
	// console's and the control socket's.
	Do func(ctx context.Context, c control.Command) control.Result
}

// Services is what the HTTP routes need of the supervisor.
type Services interface {
	Restart(name string) error
	Logs(name string, lines int) ([]string, error)
}

type server struct {
	Params
	pid int
}

// New returns the machine's HTTP handler. The read-only routes (PROTOCOL §6) stay open, with
// CORS for browser dashboards; the routes that change state or show logs are guarded.
func New(p Params) http.Handler {
	s := &server{Params: p, pid: os.Getpid()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("GET /ready", s.ready)
	mux.HandleFunc("GET /status", s.status)
	mux.HandleFunc("GET /refresh-status", s.refresh)
	mux.HandleFunc("POST /refresh-status", s.refresh)
	mux.Handle("GET /metrics", p.Metrics)
	mux.HandleFunc("POST /restart/service", s.guarded(s.restartService))
	mux.HandleFunc("POST /connectors/{name}", s.guarded(s.connector))
	mux.HandleFunc("GET /pm2/logs", s.guarded(s.serviceLogs))
	mux.HandleFunc("GET /comfyui/logs", s.guarded(s.serviceLogs))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "Not found"})
	})
	return cors(mux)
}

// openRoutes are the read-only routes a browser on any origin may read. Guarded routes get no
// CORS headers at all, so a page elsewhere cannot drive them with a token it was handed.
var openRoutes = map[string]bool{"/health": true, "/ready": true, "/status": true, "/refresh-status": true, "/metrics": true}

func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !openRoutes[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Allow-Headers", "Content-Type")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// tokenParams are query parameters that would carry a token: URLs end up in proxy logs,
// browser history and Referer headers, so a token there is refused, not used.
var tokenParams = []string{"token", "access_token", "api_token", "api_key", "apikey"}

// guarded wraps a route that changes state or shows logs: it is off (403) without
// MACHINE_API_TOKEN, refuses a token in the URL (400), and otherwise needs the token as a
// bearer token (401), compared in constant time.
func (s *server) guarded(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.Token == "" {
			writeJSON(w, http.StatusForbidden, map[string]any{
				"error": "this route changes the machine or shows its logs, and is off because MACHINE_API_TOKEN is not set; set it and send Authorization: Bearer <token>",
			})
			return
		}
		q := r.URL.Query()
		for _, k := range tokenParams {
			if q.Has(k) {
				writeJSON(w, http.StatusBadRequest, map[string]any{
					"error": fmt.Sprintf("the token must not be in the URL (?%s=), where logs and proxies keep it; send it as Authorization: Bearer <MACHINE_API_TOKEN>", k),
				})
				return
			}
		}
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || !tokenEqual(strings.TrimSpace(got), s.Token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="machine"`)
			writeJSON(w, http.StatusUnauthorized, map[string]any{
				"error": "this route needs the machine's API token: send Authorization: Bearer <MACHINE_API_TOKEN>",
			})
			return
		}
		next(w, r)
	}
}

// tokenEqual compares digests in constant time, so neither the token's content nor its length
// shows in the time an answer takes.
func tokenEqual(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// connector is POST /connectors/{name}?action=enable|disable|concurrency&count=N.
func (s *server) connector(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	cmd := control.Command{Connector: r.PathValue("name")}
	switch q.Get("action") {
	case "enable":
		cmd.Op = control.EnableConnector
	case "disable":
		cmd.Op = control.DisableConnector
	case "concurrency":
		cmd.Op = control.SetConcurrency
	default:
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "action must be enable, disable or concurrency"})
		return
	}
	if v := q.Get("count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": fmt.Sprintf("count %q is not a whole number", v)})
			return
		}
		cmd.Count = n
	}
	if s.Do == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": "the machine is not running yet"})
		return
	}
	res := s.Do(r.Context(), cmd)
	if !res.OK {
		writeJSON(w, http.StatusConflict, map[string]any{"error": res.Error})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"message": res.Message, "change": res.Change})
}

func uptimeMS(snap state.Snapshot) int64 { return time.Since(snap.StartedAt).Milliseconds() }

func (s *server) health(w http.ResponseWriter, r *http.Request) {
	snap := s.Store.Snapshot()
	services := map[string]any{}
	healthy := snap.Broker.Connected && snap.Phase != state.Shutdown
	for _, sl := range snap.Slots {
		ok := sl.Status != state.SlotStopped || snap.Phase != state.Ready
		status := "online"
		if sl.Status == state.SlotStopped {
			status = "stopped"
		}
		services[sl.ID] = map[string]any{"healthy": ok, "status": status, "pid": s.pid, "restarts": 0}
		healthy = healthy && ok
	}
	for _, st := range snap.Services {
		ok := st.Ready
		services[st.Name] = map[string]any{"healthy": ok, "status": st.PM2Status, "pid": st.PID, "restarts": st.Restarts, "error": st.Error}
		healthy = healthy && (ok || snap.Phase != state.Ready)
	}
	var brokerErr any
	if !snap.Broker.Connected {
		brokerErr = "Not connected to Redis"
		if snap.Broker.LastError != "" {
			brokerErr = "Not connected to Redis: " + snap.Broker.LastError
		}
	}
	services["status-aggregator"] = map[string]any{"healthy": snap.Broker.Connected, "error": brokerErr}
	code := http.StatusOK
	if !healthy {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"healthy": healthy, "services": services, "uptime": uptimeMS(snap)})
}

func (s *server) ready(w http.ResponseWriter, r *http.Request) {
	snap := s.Store.Snapshot()
	ready := snap.Phase == state.Ready && snap.Broker.Connected
	body := map[string]any{"phase": snap.Phase}
	if trouble := snap.ClaimTrouble(); trouble != "" {
		ready, body["reason"] = false, trouble
	}
	body["ready"] = ready
	code := http.StatusOK
	if !ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, body)
}

func (s *server) status(w http.ResponseWriter, r *http.Request) {
	snap := s.Store.Snapshot()
	slots := make([]map[string]any, 0, len(snap.Slots))
	for _, sl := range snap.Slots {
		slots = append(slots, map[string]any{
			"id": sl.ID, "connector": sl.Connector, "gpu": sl.GPU, "status": sl.Status, "job_id": sl.JobID,
			"service": sl.JobService, "progress": sl.Progress, "message": sl.Message, "completed": sl.Completed,
			"failed": sl.Failed, "last_error": sl.LastError,
		})
	}
	recent := make([]map[string]any, 0, len(snap.Recent))
	for _, f := range snap.Recent {
		r := map[string]any{
			"job_id": f.JobID, "slot": f.SlotID, "service": f.Service, "outcome": f.Outcome, "error": f.Error,
			"duration_ms": f.Duration.Milliseconds(), "at": f.At.UTC().Format(time.RFC3339Nano),
		}
		if f.Resources != nil {
			r["resources"] = f.Resources
		}
		recent = append(recent, r)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"version": s.Version, "uptime": uptimeMS(snap), "pm2Mode": false, "machine_id": snap.MachineID,
		"pool": snap.Pool, "phase": snap.Phase,
		"broker": map[string]any{"url": snap.Broker.URL, "embedded": snap.Broker.Embedded,
			"connected": snap.Broker.Connected, "last_error": snap.Broker.LastError},
		"services": services(snap), "slots": slots, "recent_jobs": recent,
		"gpu_source": snap.GPUSource, "gpus": gpus(snap), "host": host(snap.Telemetry.Host),
		"connectors": connectors(snap), "changes": changes(snap),
		"resources_last_hour": costs(snap.Costs), "autoscaler": autoscaler(snap.Autoscaler),
		"expected_durations": durations(snap.Durations), "model_cache": modelCache(snap.ModelCache),
	})
}

// modelCache is the model cache's figures: {"on": false} without one (MACHINE_MODEL_CACHE_GB=0).
// in_vram, by GPU index, is an inference: the models of the last job completed on the GPU.
func modelCache(c state.ModelCache) map[string]any {
	if !c.On {
		return map[string]any{"on": false}
	}
	list := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	vram := map[string][]string{}
	for g, names := range c.InVRAM {
		vram[strconv.Itoa(g)] = list(names)
	}
	return map[string]any{"on": true, "used_bytes": c.UsedBytes, "budget_bytes": c.BudgetBytes, "hits": c.Hits,
		"misses": c.Misses, "downloads": c.Downloads, "bytes_downloaded": c.BytesDownloaded, "evictions": c.Evictions,
		"on_disk": list(c.OnDisk), "downloading": list(c.Downloading), "in_vram": vram}
}

// autoscaler is the demand-aware autoscaler's state and its recent decisions with their reasons.
func autoscaler(a state.Autoscaler) map[string]any {
	ds := make([]map[string]any, 0, len(a.Decisions))
	for _, d := range a.Decisions {
		ds = append(ds, map[string]any{"at": d.At.UTC().Format(time.RFC3339Nano), "kind": d.Kind, "connector": d.Connector,
			"from": d.From, "count": d.Count, "reason": d.Reason, "outcome": d.Outcome, "change": d.Change})
	}
	pending := a.Pending
	if pending == nil {
		pending = map[string]int{}
	}
	return map[string]any{"on": a.On, "note": a.Note, "queue_length": a.QueueLength, "pending": pending, "decisions": ds}
}

// durations are the expected job durations (jobs:stats:duration) of this machine's services.
func durations(d []state.Duration) []map[string]any {
	out := make([]map[string]any, 0, len(d))
	for _, x := range d {
		out = append(out, map[string]any{"service": x.Service, "model": x.Model,
			"ewma_ms": x.EWMA.Milliseconds(), "count": x.Count})
	}
	return out
}

// connectors are the connectors the machine runs or ran, with their state.
func connectors(snap state.Snapshot) []map[string]any {
	out := make([]map[string]any, 0, len(snap.Connectors))
	now := time.Now()
	for _, c := range snap.Connectors {
		row := map[string]any{"name": c.Name, "state": c.State, "slots": c.Slots, "error": c.Error}
		if t, ok := snap.Throttle(c.Name); ok {
			row["throttle"] = throttleView(t, now)
		}
		out = append(out, row)
	}
	return out
}

// throttleView is how a remote API connector's API pushes back: 429s, Retry-After, the circuit
// breaker and the last errors (their secrets cut where they were recorded).
func throttleView(t throttle.State, now time.Time) map[string]any {
	errs := make([]map[string]any, 0, len(t.Errors))
	for _, e := range t.Errors {
		errs = append(errs, map[string]any{"at": e.At.UTC().Format(time.RFC3339Nano), "error": e.Text})
	}
	v := map[string]any{"throttled": t.Throttled(now), "why": t.Why(now),
		"rate_limited_last_minute": t.RecentRateLimits(now), "rate_limited_total": t.RateLimitedTotal,
		"breaker": t.Breaker, "last_errors": errs}
	if !t.BreakerSince.IsZero() {
		v["breaker_since"] = t.BreakerSince.UTC().Format(time.RFC3339Nano)
	}
	if !t.RetryAfterAt.IsZero() {
		v["retry_after_s"], v["retry_after_at"] = t.RetryAfter.Seconds(), t.RetryAfterAt.UTC().Format(time.RFC3339Nano)
	}
	return v
}

// changes are the recent changes of the running layout and how they went.
func changes(snap state.Snapshot) []map[string]any {
	out := make([]map[string]any, 0, len(snap.Changes))
	for _, c := range snap.Changes {
		out = append(out, map[string]any{"id": c.ID, "what": c.What, "state": c.State, "message": c.Message, "error": c.Error,
			"requested_at": c.RequestedAt.UTC().Format(time.RFC3339Nano)})
	}
	return out
}

// costs is the per-service summary of the jobs' resource records over the last hour.
func costs(cs []state.ServiceCost) []map[string]any {
	out := []map[string]any{}
	for _, c := range cs {
		out = append(out, map[string]any{
			"service": c.Service, "jobs": c.Jobs, "run_mean_ms": c.RunMeanMS, "run_p95_ms": c.RunP95MS,
			"gpu_energy_wh_mean": c.WhMean, "gpu_energy_wh_p95": c.WhP95, "gpu_seconds": c.GPUSeconds, "gpu_energy_wh": c.EnergyWh,
		})
	}
	return out
}

func services(snap state.Snapshot) map[string]any {
	out := map[string]any{}
	for _, st := range snap.Services {
		var uptime int64
		if st.PID > 0 {
			uptime = time.Since(st.StartedAt).Milliseconds()
		}
		var mem any
		if st.RSSMB > 0 {
			mem = int64(st.RSSMB * (1 << 20))
		}
		out[st.Name] = map[string]any{
			"name": st.Name, "status": st.PM2Status, "state": st.State, "pid": st.PID, "memory": mem,
			"uptime": uptime, "restarts": st.Restarts, "port": st.Port, "adopted": st.Adopted,
			"last_exit": st.LastExit, "error": st.Error,
		}
	}
	return out
}

// na turns an n/a reading into JSON null.
func na(v float64) any {
	if gpu.IsNA(v) {
		return nil
	}
	return v
}

// gpus lists the latest GPU readings with the job running on each (from the plan's binding:
// NVML process ids are host pids and do not match ours inside a container).
func gpus(snap state.Snapshot) []map[string]any {
	out := []map[string]any{}
	for _, r := range snap.Telemetry.GPUs {
		var jobs []string
		for _, sl := range snap.Slots {
			if sl.GPU == r.Index && sl.JobID != "" {
				jobs = append(jobs, sl.JobID)
			}
		}
		reason, bad := snap.Telemetry.Unhealthy[r.Index]
		out = append(out, map[string]any{
			"index": r.Index, "name": r.Name, "uuid": r.UUID, "mig": r.MIG, "healthy": !bad, "unhealthy_reason": reason,
			"utilization_percent": na(r.UtilGPU), "memory_utilization_percent": na(r.UtilMemory),
			"memory_used_mb": na(r.MemoryUsedMB), "memory_total_mb": na(r.MemoryTotalMB),
			"temperature_c": na(r.TemperatureC), "power_w": na(r.PowerW), "power_limit_w": na(r.PowerLimitW),
			"fan_percent": na(r.FanPct), "sm_clock_mhz": na(r.SMClockMHz), "memory_clock_mhz": na(r.MemClockMHz),
			"pstate": na(r.PState), "encoder_percent": na(r.EncoderUtil), "decoder_percent": na(r.DecoderUtil),
			"energy_total_mj": na(r.EnergyMJ), "jobs": jobs,
		})
	}
	return out
}

func host(h state.Host) map[string]any {
	return map[string]any{
		"cpu_percent": na(h.CPUPercent), "cpu_cores": h.CPUCores, "memory_used_mb": na(h.MemUsedMB),
		"memory_total_mb": na(h.MemTotalMB), "disk_path": h.DiskPath, "disk_used_gb": na(h.DiskUsedGB),
		"disk_total_gb": na(h.DiskTotalGB),
	}
}

func (s *server) refresh(w http.ResponseWriter, r *http.Request) {
	if s.Refresh != nil {
		s.Refresh()
	}
	snap := s.Store.Snapshot()
	writeJSON(w, http.StatusOK, map[string]any{
		"message": "Status update triggered", "machine_id": snap.MachineID, "timestamp": time.Now().UnixMilli(),
	})
}

// restartService restarts a supervised service (the monitor's button).
func (s *server) restartService(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("service")
	if name == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "name the service: ?service=<name>"})
		return
	}
	if err := s.serviceErr(name, func() error { return s.Services.Restart(name) }); err != nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"message": fmt.Sprintf("Service %s restarting", name), "service": name})
}

// serviceLogs returns a service's last lines as text (?lines=, default 50).
func (s *server) serviceLogs(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("service")
	if g := r.URL.Query().Get("gpu"); name == "" && g != "" {
		name = "comfyui-gpu" + g
	}
	if name == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "name the service: ?service=<name>"})
		return
	}
	n := 50
	if v := r.URL.Query().Get("lines"); v != "" {
		if _, err := fmt.Sscanf(v, "%d", &n); err != nil || n < 1 {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "lines must be a positive number"})
			return
		}
	}
	var lines []string
	if err := s.serviceErr(name, func() (err error) { lines, err = s.Services.Logs(name, n); return err }); err != nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": err.Error()})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

func (s *server) serviceErr(name string, op func() error) error {
	if s.Services == nil {
		return fmt.Errorf("no service named %q is supervised by this machine; it runs no services in this configuration", name)
	}
	return op()
}
