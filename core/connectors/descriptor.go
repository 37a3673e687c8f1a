package connectors

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors/throttle"
	"github.com/emp-job-queue/machine/core/netguard"
	"github.com/emp-job-queue/machine/core/supervisor"
)

// Descriptor is everything the machine knows about one connector type: the job services it
// claims, how it binds to GPUs, the service it needs the machine to run, what the configuration
// must hold for it, and how to build it. Each connector package exports its descriptors and
// core/connectors/registry lists them; nothing else names a connector.
//
// It is the Go counterpart of the old runtime's service-mapping.json (emp-reference §7.2).
type Descriptor struct {
	Name string
	// JobServices are the service_required values the connector accepts. They are sent as both
	// `services` and `job_service_required_map` in the claim capabilities (PROTOCOL §2).
	JobServices []string
	// StatusServices are the names shown to the monitor in machine:status
	// structure.workers[].services (the old runtime's internal service names).
	StatusServices []string
	// GPUBound connectors get one slot per GPU instance by default and are pinned to a GPU.
	GPUBound bool
	// AutoPerGPU: a count of "auto" means one slot per GPU (not per GPU instance), as the old
	// generator gave ollama, whose one daemon serves every GPU.
	AutoPerGPU bool
	// Service is the internal service the connector talks to; nil for in-process connectors
	// and remote APIs.
	Service *ServiceKind
	// Check lists what the configuration lacks for this connector (a missing key), one
	// sentence each that says what to set; nil when it needs nothing.
	Check func(cfg *config.Config) []string
	// New builds a connector. One value is shared by every slot of the same connector and
	// service instance (by all the connector's slots when it needs no service), so a remote
	// API's rate limit and breaker are per connector and a browser's tab limit per browser.
	New func(env Env) Connector
}

// Env is what a connector is built from.
type Env struct {
	Config *config.Config
	// ServiceURL is the base URL of the slot's service instance, e.g. http://127.0.0.1:8188;
	// empty when the connector needs no service.
	ServiceURL string
	// Assets is where produced files go: the local asset directory, or the S3-compatible
	// storage a job's ctx.storage names.
	Assets assets.Saver
	// Network is what the traffic a job causes (browser pages, downloaded outputs) may reach:
	// public addresses and the networks the operator allows, never the machine's own HTTP port.
	Network netguard.Policy
	// Throttle is where an API connector's client reports 429s, its breaker's state and its
	// failed requests (remote.Options.Observer); nil records nothing. One per connector.
	Throttle *throttle.Recorder
}

// ServiceKind is an internal service a connector needs the machine to install and supervise.
type ServiceKind struct {
	// Kind names the service; its instances are named Kind, Kind-gpuN or Kind-cpuN.
	Kind string
	// BasePort is the port of the first instance; instance n listens on BasePort+n.
	BasePort func(cfg *config.Config) int
	// PerGPU services run one instance per GPU (and per PM2_INSTANCES_PER_GPU), others one
	// instance shared by every slot.
	PerGPU bool
	// Install makes the service runnable (idempotently: a second boot skips what is done)
	// and returns how the supervisor runs one of its instances.
	Install func(ctx context.Context, env InstallEnv) (SpecFunc, error)
}

// InstallEnv is what an installer is given.
type InstallEnv struct {
	Config *config.Config
	Log    *slog.Logger
}

// Instance is one planned instance of a service.
type Instance struct {
	Name  string
	Port  int
	GPU   int // -1 when not bound to a GPU
	Slots int // how many slots it serves (a shared daemon sizes its parallelism by it)
}

// SpecFunc describes how the supervisor runs one instance of an installed service.
type SpecFunc func(Instance) supervisor.Spec

// Port returns a fixed base port, for ServiceKind.BasePort.
func Port(p int) func(*config.Config) int { return func(*config.Config) int { return p } }

// NeedKey is the problem of a connector whose secret is not set, for Descriptor.Check.
func NeedKey(connector, value, key string) []string {
	if value != "" {
		return nil
	}
	return []string{fmt.Sprintf("WORKER_CONNECTORS has %s but neither %s nor %s_FILE is set; give the key", connector, key, key)}
}
