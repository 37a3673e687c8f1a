// Package status publishes machine:status:{machine_id}, the one message the monitor needs from
// a machine (PROTOCOL §5): periodically, at once when a slot or the phase changes, and on
// demand (/refresh-status).
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/emp-job-queue/machine/core/plan"
	"github.com/emp-job-queue/machine/core/state"
)

// Update types of the message.
const (
	Periodic     = "periodic"
	EventDriven  = "event_driven"
	MachineReady = "machine_ready"
	Shutdown     = "shutdown"
)

// buildInfo tells the monitor which runtime a worker runs (emp's workers send their build there).
const buildInfo = "machine-go"

// Message is the machine:status payload.
type Message struct {
	MachineID  string    `json:"machine_id"`
	Timestamp  int64     `json:"timestamp"`
	UpdateType string    `json:"update_type"`
	Structure  Structure `json:"structure"`
	Status     Status    `json:"status"`
	HealthURL  string    `json:"health_url"`
}

// Structure is what the machine runs.
type Structure struct {
	GPUCount     int                         `json:"gpu_count"`
	Capabilities []string                    `json:"capabilities"`
	Workers      map[string]WorkerStructure  `json:"workers"`
	Services     map[string]ServiceStructure `json:"services"`
}

// WorkerStructure describes one slot.
type WorkerStructure struct {
	WorkerID        string   `json:"worker_id"`
	PM2Name         string   `json:"pm2_name"`
	GPUID           int      `json:"gpu_id"`
	WorkerType      string   `json:"worker_type"`
	ResourceBinding string   `json:"resource_binding"`
	Services        []string `json:"services"`
	Connectors      []string `json:"connectors"`
}

// ServiceStructure describes one connector service of a slot.
type ServiceStructure struct {
	WorkerID    string `json:"worker_id"`
	ServiceType string `json:"service_type"`
	PM2Name     string `json:"pm2_name"`
	Status      string `json:"status"`
	Health      string `json:"health"`
}

// Status is how things are now.
type Status struct {
	Machine  MachineStatus            `json:"machine"`
	Workers  map[string]WorkerStatus  `json:"workers"`
	Services map[string]ServiceStatus `json:"services"`
}

// MachineStatus is the machine's phase and uptime.
type MachineStatus struct {
	Phase    string `json:"phase"`
	UptimeMS int64  `json:"uptime_ms"`
	// Pool is MACHINE_POOL (ours, additive): absent when the machine has none.
	Pool string `json:"pool,omitempty"`
	// Models is what the model cache holds (ours, additive): absent without a model cache.
	Models *ModelsStatus `json:"models,omitempty"`
}

// ModelsStatus is the models a machine has: on its disk (the model cache), being downloaded,
// and in each GPU's memory, by GPU index. in_vram is an inference (the models of the last job
// completed on the GPU, which ComfyUI keeps loaded), not a reading.
type ModelsStatus struct {
	OnDisk      []string            `json:"on_disk"`
	Downloading []string            `json:"downloading"`
	InVRAM      map[string][]string `json:"in_vram"`
}

func modelsStatus(c state.ModelCache) *ModelsStatus {
	if !c.On {
		return nil
	}
	out := &ModelsStatus{OnDisk: nonNil(c.OnDisk), Downloading: nonNil(c.Downloading), InVRAM: map[string][]string{}}
	for g, names := range c.InVRAM {
		out.InVRAM[strconv.Itoa(g)] = nonNil(names)
	}
	return out
}

// nonNil keeps JSON arrays arrays: the monitor and cjson readers never see null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// WorkerStatus is one slot's live state.
type WorkerStatus struct {
	IsConnected    bool    `json:"is_connected"`
	Status         string  `json:"status"`
	CurrentJobID   *string `json:"current_job_id"`
	LastActivity   int64   `json:"last_activity"`
	Version        string  `json:"version"`
	BuildTimestamp int64   `json:"build_timestamp"`
	BuildInfo      string  `json:"build_info"`
}

// ServiceStatus is one connector service's live state.
type ServiceStatus struct {
	ServiceStructure
	PM2Status string `json:"pm2_status"`
}

// Build assembles the message from the plan and a state snapshot. lastSeen holds the last
// activity of slots the snapshot may no longer have (nil: none known).
//
// structure.workers lists only the slots that take jobs. The emp API copies every worker listed
// both there and in status.workers into a worker:{id} hash with a 120 s TTL
// (handleUnifiedMachineStatus, apps/api/src/lightweight-api-server.ts), so listing a slot that is
// stopping or already deregistered would bring its hash back after our DEL. A slot leaves
// structure.workers when it stops, when the machine drains (unless it is still finishing a job),
// and when it is removed; status.workers keeps reporting it, offline once it stopped, with its
// last real activity. The shutdown message therefore carries every worker's last status and
// lists none in the structure.
func Build(p *plan.Plan, snap state.Snapshot, updateType, healthURL, version string, now time.Time, lastSeen map[string]time.Time) Message {
	m := Message{
		MachineID: p.MachineID, Timestamp: now.UnixMilli(), UpdateType: updateType, HealthURL: healthURL,
		Structure: Structure{
			// The monitor prints a bare "0" for gpu_count 0 (MachineCard.tsx renders
			// `gpu_count && …`); emp's aggregator never reports fewer than 1.
			GPUCount: max(p.GPUCount, 1), Capabilities: []string{},
			Workers: map[string]WorkerStructure{}, Services: map[string]ServiceStructure{},
		},
		Status: Status{
			Machine: MachineStatus{Phase: monitorPhase(snap.Phase), UptimeMS: now.Sub(snap.StartedAt).Milliseconds(),
				Pool: snap.Pool, Models: modelsStatus(snap.ModelCache)},
			Workers: map[string]WorkerStatus{}, Services: map[string]ServiceStatus{},
		},
	}
	draining := snap.Phase == state.Draining || snap.Phase == state.Shutdown
	seen := map[string]bool{}
	for _, sl := range p.Slots {
		for _, svc := range sl.StatusNames {
			if !seen[svc] {
				seen[svc] = true
				m.Structure.Capabilities = append(m.Structure.Capabilities, svc)
			}
		}
		live, present := snap.Slot(sl.ID)
		if !present { // stopped and deregistered
			at, ok := lastSeen[sl.ID]
			if !ok {
				at = now
			}
			m.Status.Workers[sl.ID] = WorkerStatus{Status: state.SlotStopped, LastActivity: at.UnixMilli(), Version: version, BuildInfo: buildInfo}
			continue
		}
		ws := WorkerStatus{
			IsConnected: snap.Broker.Connected && live.Status != state.SlotStopped, Status: live.Status,
			LastActivity: live.LastActivity.UnixMilli(), Version: version, BuildInfo: buildInfo,
		}
		if live.JobID != "" {
			id := live.JobID
			ws.CurrentJobID = &id
		}
		m.Status.Workers[sl.ID] = ws
		if live.Status == state.SlotStopped || (draining && live.Status != state.SlotBusy) {
			continue
		}
		pm2Name := fmt.Sprintf("redis-worker-%s-%d", sl.Connector, sl.Index)
		gpuID := sl.Index // as emp's aggregator reads it from the PM2 name of a worker not bound to a GPU
		if sl.GPU != plan.NoGPU {
			pm2Name = fmt.Sprintf("redis-worker-%s-gpu%d", sl.Connector, sl.Index)
			gpuID = sl.GPU
		}
		m.Structure.Workers[sl.ID] = WorkerStructure{
			WorkerID: sl.ID, PM2Name: pm2Name, GPUID: gpuID, WorkerType: sl.Connector,
			ResourceBinding: sl.Binding, Services: sl.StatusNames, Connectors: []string{sl.Connector},
		}
		for _, svc := range sl.StatusNames {
			st := ServiceStructure{WorkerID: sl.ID, ServiceType: svc, PM2Name: pm2Name, Status: "unknown", Health: "unknown"}
			m.Structure.Services[sl.ID+"."+svc] = st
			m.Status.Services[sl.ID+"."+svc] = serviceStatus(st, live, snap, sl)
		}
	}
	return m
}

// serviceStatus fills a connector service's state: a slot's internal service as the
// supervisor sees it (not found when it does not run it), and in-process connectors as healthy
// as the slot and its broker connection.
func serviceStatus(st ServiceStructure, live state.Slot, snap state.Snapshot, sl plan.Slot) ServiceStatus {
	s := ServiceStatus{ServiceStructure: st}
	if sl.Service != "" {
		sup, ok := snap.Service(sl.Service)
		switch {
		case !ok:
			s.Status, s.Health, s.PM2Status = "inactive", "unknown", "not_found"
		case sup.Ready:
			s.Status, s.Health, s.PM2Status = "active", "healthy", sup.PM2Status
		case sup.Errored:
			s.Status, s.Health, s.PM2Status = "inactive", "unhealthy", sup.PM2Status
		default:
			s.Status, s.Health, s.PM2Status = "inactive", "unknown", sup.PM2Status
		}
		return s
	}
	switch {
	case live.Status == state.SlotStopped:
		s.Status, s.Health, s.PM2Status = "inactive", "unknown", "stopped"
	case !snap.Broker.Connected:
		s.Status, s.Health, s.PM2Status = "active", "unhealthy", "online"
	default:
		s.Status, s.Health, s.PM2Status = "active", "healthy", "online"
	}
	return s
}

// monitorPhase maps our phases onto the three the monitor knows.
func monitorPhase(p state.Phase) string {
	switch p {
	case state.Ready:
		return "ready"
	case state.Draining, state.Shutdown:
		return "shutdown"
	default:
		return "starting"
	}
}

// Sender publishes an encoded message; *broker.Broker satisfies it.
type Sender interface {
	PublishMachineStatus(ctx context.Context, machineID string, msg []byte) error
}

// Publisher sends the message periodically, on slot changes and on request.
type Publisher struct {
	plan      func() *plan.Plan // the plan in force: connectors may change while the machine runs
	store     *state.Store
	send      Sender
	interval  time.Duration
	minGap    time.Duration // coalesces bursts of slot changes (thousands of jobs a second)
	healthURL string
	version   string
	log       *slog.Logger
	refresh   chan struct{}

	// mu keeps messages in the order they were built, so none that lists a worker can follow
	// the shutdown message, and guards the fields below.
	mu       sync.Mutex
	lastSeen map[string]time.Time // each slot's last activity, kept after the slot is removed
	shutDown bool                 // the shutdown message went out: nothing follows it
}

// NewPublisher returns a publisher; Run starts it.
func NewPublisher(p func() *plan.Plan, store *state.Store, send Sender, interval time.Duration, healthURL, version string, log *slog.Logger) *Publisher {
	return &Publisher{
		plan: p, store: store, send: send, interval: interval, minGap: 250 * time.Millisecond,
		healthURL: healthURL, version: version, log: log, refresh: make(chan struct{}, 1),
		lastSeen: map[string]time.Time{},
	}
}

// Refresh asks for an immediate publish.
func (p *Publisher) Refresh() {
	select {
	case p.refresh <- struct{}{}:
	default:
	}
}

// Publish sends one message now. After the shutdown message it sends nothing: the workers are
// deregistered, and the monitor's last word on them must be that message.
func (p *Publisher) Publish(ctx context.Context, updateType string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shutDown {
		return nil
	}
	snap := p.store.Snapshot()
	for _, sl := range snap.Slots {
		p.lastSeen[sl.ID] = sl.LastActivity
	}
	pl := p.plan()
	msg, err := json.Marshal(Build(pl, snap, updateType, p.healthURL, p.version, time.Now(), p.lastSeen))
	if err != nil {
		return fmt.Errorf("encode machine status: %w", err)
	}
	if err := p.send.PublishMachineStatus(ctx, pl.MachineID, msg); err != nil {
		return err
	}
	p.shutDown = updateType == Shutdown
	return nil
}

// Run publishes until ctx ends. Errors are logged (once per outage) and never stop the loop.
func (p *Publisher) Run(ctx context.Context) {
	changes, stop := p.store.Subscribe()
	defer stop()
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	_, lastWorkers := p.store.Versions()
	var last time.Time
	failing := false
	publish := func(kind string) {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		last = time.Now()
		if err := p.Publish(pctx, kind); err != nil {
			if !failing && ctx.Err() == nil {
				p.log.Warn("machine status not published; the monitor will mark this machine disconnected if this lasts 30 s", "err", err)
			}
			failing = true
			return
		}
		failing = false
	}
	var pending <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			publish(Periodic)
		case <-p.refresh:
			publish(EventDriven)
		case <-changes:
			if _, v := p.store.Versions(); v != lastWorkers && pending == nil {
				lastWorkers = v
				pending = time.After(max(0, p.minGap-time.Since(last)))
			}
		case <-pending:
			pending = nil
			_, lastWorkers = p.store.Versions()
			publish(EventDriven)
		}
	}
}
