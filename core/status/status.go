// Package status publishes machine:status:{machine_id}, the one message the monitor needs from
// a machine (PROTOCOL §5): periodically, at once when a slot or the phase changes, and on
// demand (/refresh-status).
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
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

// Build assembles the message from the plan and a state snapshot.
func Build(p *plan.Plan, snap state.Snapshot, updateType, healthURL, version string, now time.Time) Message {
	m := Message{
		MachineID: p.MachineID, Timestamp: now.UnixMilli(), UpdateType: updateType, HealthURL: healthURL,
		Structure: Structure{
			GPUCount: p.GPUCount, Capabilities: []string{},
			Workers: map[string]WorkerStructure{}, Services: map[string]ServiceStructure{},
		},
		Status: Status{
			Machine: MachineStatus{Phase: monitorPhase(snap.Phase), UptimeMS: now.Sub(snap.StartedAt).Milliseconds()},
			Workers: map[string]WorkerStatus{}, Services: map[string]ServiceStatus{},
		},
	}
	seen := map[string]bool{}
	for _, sl := range p.Slots {
		live, _ := snap.Slot(sl.ID)
		gpu := max(sl.GPU, 0) // the old runtime reports non-GPU workers on gpu 0
		pm2Name := fmt.Sprintf("redis-worker-%s-%d", sl.Connector, sl.Index)
		if sl.GPU != plan.NoGPU {
			pm2Name = fmt.Sprintf("redis-worker-%s-gpu%d", sl.Connector, sl.Index)
		}
		m.Structure.Workers[sl.ID] = WorkerStructure{
			WorkerID: sl.ID, PM2Name: pm2Name, GPUID: gpu, WorkerType: sl.Connector,
			ResourceBinding: sl.Binding, Services: sl.StatusNames, Connectors: []string{sl.Connector},
		}
		ws := WorkerStatus{
			IsConnected: snap.Broker.Connected && live.Status != state.SlotStopped, Status: live.Status,
			LastActivity: live.LastActivity.UnixMilli(), Version: version, BuildInfo: "machine-go",
		}
		if live.JobID != "" {
			id := live.JobID
			ws.CurrentJobID = &id
		}
		m.Status.Workers[sl.ID] = ws
		for _, svc := range sl.StatusNames {
			if !seen[svc] {
				seen[svc] = true
				m.Structure.Capabilities = append(m.Structure.Capabilities, svc)
			}
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
}

// NewPublisher returns a publisher; Run starts it.
func NewPublisher(p func() *plan.Plan, store *state.Store, send Sender, interval time.Duration, healthURL, version string, log *slog.Logger) *Publisher {
	return &Publisher{
		plan: p, store: store, send: send, interval: interval, minGap: 250 * time.Millisecond,
		healthURL: healthURL, version: version, log: log, refresh: make(chan struct{}, 1),
	}
}

// Refresh asks for an immediate publish.
func (p *Publisher) Refresh() {
	select {
	case p.refresh <- struct{}{}:
	default:
	}
}

// Publish sends one message now.
func (p *Publisher) Publish(ctx context.Context, updateType string) error {
	msg, err := json.Marshal(Build(p.plan(), p.store.Snapshot(), updateType, p.healthURL, p.version, time.Now()))
	if err != nil {
		return fmt.Errorf("encode machine status: %w", err)
	}
	return p.send.PublishMachineStatus(ctx, p.plan().MachineID, msg)
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
