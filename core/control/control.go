// Package control is how a console watches and steers a running core: a versioned protocol of
// snapshots and commands, served on a unix socket (mode 0600) for `machine console`, and over
// an in-memory transport for the console that runs in the same process. Both use the same
// types and the same Core, so they are one code path.
//
// Wire format (version 1): newline-delimited JSON. The client sends {"v":1}; the server answers
// with a snapshot at once and another after every change (at most 10 a second); the client may
// send {"id":n,"command":{…}} at any time and gets {"id":n,"result":{…}}.
package control

import (
	"context"
	"fmt"
	"math"

	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/state"
)

// Version is the protocol version.
const Version = 1

// Snapshot is everything the console shows, as of one moment.
type Snapshot struct {
	Seq        uint64      `json:"seq"`
	Machine    Machine     `json:"machine"`
	GPUs       []GPU       `json:"gpus"`
	Services   []Service   `json:"services"`
	Connectors []Connector `json:"connectors"`
	Jobs       []Job       `json:"jobs"`    // in flight
	Recent     []Finished  `json:"recent"`  // newest last
	Changes    []Change    `json:"changes"` // recent connector changes, oldest first
	// Costs summarize the jobs' resource records per service over the last hour.
	Costs []ServiceCost `json:"costs,omitempty"`
	// For the console's graphs and describe views (detail.go).
	Host   Host   `json:"host"`
	Trends Trends `json:"trends"`
	Slots  []Slot `json:"slots"`
	// Autoscaler is the demand-aware autoscaler's state, for the console's Decisions line.
	Autoscaler Autoscaler `json:"autoscaler"`
	// Durations are the fleet's expected job durations of this machine's services
	// (jobs:stats:duration, most counted first), which the claim's pool fit uses.
	Durations []ExpectedDuration `json:"expected_durations,omitempty"`
	// ModelCache is the model cache's figures (On false: MACHINE_MODEL_CACHE_GB=0).
	ModelCache ModelCache `json:"model_cache"`
	// Demand is the demand tracker's view of the queue (decisions.go).
	Demand Demand `json:"demand"`
}

// ExpectedDuration is the expected duration of one kind of job: a service and the first model
// its jobs name ("" for none).
type ExpectedDuration struct {
	Service string `json:"service"`
	Model   string `json:"model,omitempty"`
	EWMAMS  int64  `json:"ewma_ms"`
	Count   int64  `json:"count"`
}

// ModelCache is what the console shows of the model cache.
type ModelCache struct {
	On          bool     `json:"on"`
	UsedBytes   int64    `json:"used_bytes"`
	BudgetBytes int64    `json:"budget_bytes"`
	Hits        int64    `json:"hits"`
	Misses      int64    `json:"misses"`
	Downloads   int64    `json:"downloads"`
	Evictions   int64    `json:"evictions"`
	OnDisk      int      `json:"on_disk"`               // models on disk
	Downloading []string `json:"downloading,omitempty"` // models being downloaded
	// InVRAM is, per GPU, the models of the last job completed on it (an inference).
	InVRAM map[int][]string `json:"in_vram,omitempty"`
	// Models are the models on disk with their sizes, by name.
	Models []CachedModel `json:"models,omitempty"`
}

// Autoscaler is what the autoscaler does and the demand it sees.
type Autoscaler struct {
	On      bool      `json:"on"`
	Note    string    `json:"note,omitempty"` // why it is off, or what it waits for
	Pending int       `json:"pending"`        // pending jobs the demand tracker attributes to a service
	Queue   int64     `json:"queue"`          // jobs:pending, all services
	Last    *Decision `json:"last,omitempty"` // its latest decision
	Count   int       `json:"decisions"`      // recent decisions kept
	// Recent are the recent decisions, oldest first (the last 20).
	Recent []Decision `json:"recent,omitempty"`
}

// Decision is one autoscaler decision.
type Decision struct {
	What    string `json:"what"` // e.g. "enable mock to 1 slot(s)"
	Reason  string `json:"reason"`
	Outcome string `json:"outcome"`
	AgeMS   int64  `json:"age_ms"`
}

// ServiceCost is one service's jobs over the last hour.
type ServiceCost struct {
	Service    string   `json:"service"`
	Jobs       int      `json:"jobs"`
	RunMeanMS  float64  `json:"run_mean_ms"`
	RunP95MS   float64  `json:"run_p95_ms"`
	WhMean     *float64 `json:"wh_mean"` // nil: no job's energy was measured
	WhP95      *float64 `json:"wh_p95"`
	GPUSeconds float64  `json:"gpu_seconds"`
}

// Machine is the header.
type Machine struct {
	ID              string `json:"id"`
	Pool            string `json:"pool,omitempty"`
	Phase           string `json:"phase"`
	Paused          bool   `json:"paused"` // drained by the operator: slots claim nothing
	UptimeMS        int64  `json:"uptime_ms"`
	BrokerURL       string `json:"broker_url"` // password hidden
	BrokerConnected bool   `json:"broker_connected"`
	BrokerEmbedded  bool   `json:"broker_embedded"`
	QueueDepth      int64  `json:"queue_depth"` // pending jobs for the services this machine serves
	GPUSource       string `json:"gpu_source"`
	Version         string `json:"version"`
}

// GPU is one GPU. Readings that are n/a are nil.
type GPU struct {
	Index      int       `json:"index"`
	Name       string    `json:"name"`
	MIG        bool      `json:"mig"`
	Healthy    bool      `json:"healthy"`
	Reason     string    `json:"reason,omitempty"`
	Util       *float64  `json:"util"`
	MemUsedMB  *float64  `json:"mem_used_mb"`
	MemTotalMB *float64  `json:"mem_total_mb"`
	TempC      *float64  `json:"temp_c"`
	PowerW     *float64  `json:"power_w"`
	PowerLimit *float64  `json:"power_limit_w"`
	History    Series    `json:"history"` // utilization, oldest first; NaN-free (n/a as -1)
	Jobs       []string  `json:"jobs"`
	Detail     GPUDetail `json:"detail"`
}

// Service is one supervised service.
type Service struct {
	Name     string        `json:"name"`
	State    string        `json:"state"`
	PID      int           `json:"pid"`
	Restarts int           `json:"restarts"`
	Healthy  bool          `json:"healthy"`
	Port     int           `json:"port"`
	UptimeMS int64         `json:"uptime_ms"`
	Error    string        `json:"error,omitempty"`
	Detail   ServiceDetail `json:"detail"`
}

// Connector is one connector the machine runs or ran.
type Connector struct {
	Name   string               `json:"name"`
	State  state.ConnectorState `json:"state"`
	Error  string               `json:"error,omitempty"` // why its last change failed
	Busy   int                  `json:"busy"`
	Slots  int                  `json:"slots"`
	Done   uint64               `json:"done"`
	Failed uint64               `json:"failed"`
	// Throttle is how the connector's remote API pushes back; nil for connectors that are no
	// remote API (or have not sent a request yet).
	Throttle *Throttle `json:"throttle,omitempty"`
}

// Change is a change of the running layout and how it went.
type Change struct {
	ID      uint64            `json:"id"`
	What    string            `json:"what"`
	State   state.ChangeState `json:"state"`
	Message string            `json:"message"`
	Error   string            `json:"error,omitempty"`
}

// Job is a job in flight.
type Job struct {
	ID        string    `json:"id"`
	Slot      string    `json:"slot"`
	Connector string    `json:"connector"`
	Service   string    `json:"service"`
	GPU       int       `json:"gpu"`
	Progress  float64   `json:"progress"`
	Message   string    `json:"message"`
	ElapsedMS int64     `json:"elapsed_ms"`
	Detail    JobDetail `json:"detail"`
}

// Finished is a recently ended job.
type Finished struct {
	ID         string      `json:"id"`
	Service    string      `json:"service"`
	Outcome    job.Outcome `json:"outcome"`
	Error      string      `json:"error,omitempty"`
	DurationMS int64       `json:"duration_ms"`
	// Resources is the attempt's resource record, when the machine keeps one.
	Resources *job.Resources `json:"resources,omitempty"`
	Slot      string         `json:"slot,omitempty"`
	EndedMS   int64          `json:"ended_ms,omitempty"` // Unix ms
	Detail    JobDetail      `json:"detail"`
}

// Op is what a Command asks for.
type Op string

// Ops of a Command.
const (
	EnableConnector  Op = "enable_connector"
	DisableConnector Op = "disable_connector"
	SetConcurrency   Op = "set_concurrency"
	RestartService   Op = "restart_service"
	StopService      Op = "stop_service"
	StartService     Op = "start_service"
	Drain            Op = "drain"
	Resume           Op = "resume"
	Logs             Op = "logs"
)

// Command asks the core to do something.
type Command struct {
	Op        Op     `json:"op"`
	Connector string `json:"connector,omitempty"`
	Count     int    `json:"count,omitempty"`
	Service   string `json:"service,omitempty"`
	Lines     int    `json:"lines,omitempty"`
}

// Result is the core's answer: OK, or an Error sentence that says what to do.
type Result struct {
	OK      bool     `json:"ok"`
	Error   string   `json:"error,omitempty"`
	Message string   `json:"message,omitempty"`
	Lines   []string `json:"lines,omitempty"`
	Change  uint64   `json:"change,omitempty"` // the connector change it queued; its progress is in Snapshot.Changes
}

// Fail is a result that did not happen, with its reason.
func Fail(format string, args ...any) Result { return Result{Error: fmt.Sprintf(format, args...)} }

// Core is what the control API serves: the machine implements it.
type Core interface {
	Snapshot() Snapshot
	// Changes signals after changes (coalesced): events (a job, slot, service or connector
	// changed) and new periodic readings (telemetry, resources, queue depth) apart, so
	// consoles show events at once and readings at their own pace; stop ends the subscription.
	Changes() (events, readings <-chan struct{}, stop func())
	Do(ctx context.Context, c Command) Result
}

// Client is the console's view of a core, local or remote.
type Client interface {
	// Updates delivers snapshots, the latest first; it is closed when the core goes away.
	Updates() <-chan Snapshot
	Do(ctx context.Context, c Command) (Result, error)
	Close() error
}

// Reading turns a reading into a JSON-safe value: nil when n/a (NaN).
func Reading(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}
