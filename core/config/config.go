// Package config reads the machine's configuration from the environment and validates it,
// reporting every problem at once with the variable's name and how to fix it.
package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Connector is one entry of WORKER_CONNECTORS: a connector type and how many worker slots run it.
type Connector struct {
	Name  string
	Count int  // explicit slot count; 0 when Auto
	Auto  bool // count derived from the hardware (one slot per GPU instance for GPU-bound types)
}

// Config is the machine's whole configuration. It is immutable after Load.
type Config struct {
	MachineID   string // MACHINE_ID
	MachineType string // MACHINE_TYPE
	Pool        string // MACHINE_POOL

	// The claim's routing (broker.Routing). PoolMin/PoolMax: MACHINE_POOL_DURATION, else the
	// range of a known pool name (fast, standard, heavy), else none.
	PoolMin, PoolMax time.Duration
	PoolAging        time.Duration // MACHINE_POOL_AGING (30 s)
	PoolReserve      int           // MACHINE_POOL_RESERVE (0): idle slots never lent to other pools' jobs
	AffinityK        int           // MACHINE_AFFINITY_K (8; 1: no affinity)
	AffinityWindow   time.Duration // MACHINE_AFFINITY_WINDOW (10 s)
	AffinityLeave    bool          // MACHINE_AFFINITY_LEAVE (false): leave jobs whose models are not cached here

	Connectors []Connector // WORKER_CONNECTORS (alias WORKERS)

	GPUCount        int           // MACHINE_GPU_COUNT
	HasGPU          bool          // MACHINE_HAS_GPU
	GPUModel        string        // MACHINE_GPU_MODEL
	GPUMemoryGB     float64       // MACHINE_GPU_MEMORY_GB
	RAMGB           float64       // MACHINE_RAM_GB
	CPUCores        int           // MACHINE_CPU_CORES
	InstancesPerGPU int           // PM2_INSTANCES_PER_GPU
	SimulatedGPUs   bool          // true when the GPUs are the fake source's
	GPUMode         string        // GPU_MODE: auto (NVML if present), actual (NVML or fail), mock (fake)
	GPUSampleEvery  time.Duration // MACHINE_GPU_SAMPLE_INTERVAL_MS
	GPUHourPrice    float64       // MACHINE_GPU_HOUR_PRICE: USD per GPU-hour, for cost_usd in job records; 0: unset
	KWhPrice        float64       // MACHINE_KWH_PRICE: USD per kWh of GPU energy, for cost_usd; 0: unset
	Workspace       string        // MACHINE_WORKSPACE: whose disk the host metrics report

	gpuCountSet, gpuModelSet, gpuMemorySet bool

	RedisURL string // HUB_REDIS_URL; empty (and no sentinels): start the embedded broker
	// RedisSentinels (HUB_REDIS_SENTINELS, host:port,...) reach the broker through Redis
	// Sentinel, which names the master RedisMaster (HUB_REDIS_SENTINEL_MASTER); the sentinels'
	// own password is RedisSentinelPassword (HUB_REDIS_SENTINEL_PASSWORD). HUB_REDIS_URL then
	// gives only the master's password and database.
	RedisSentinels        []string
	RedisMaster           string
	RedisSentinelPassword string

	HealthPort         int           // MACHINE_HEALTH_PORT (0: any free port)
	APIToken           string        // MACHINE_API_TOKEN: required by mutating HTTP routes when set
	StatusInterval     time.Duration // MACHINE_STATUS_UPDATE_INTERVAL_SECONDS
	HeartbeatInterval  time.Duration // WORKER_HEARTBEAT_INTERVAL_MS
	PollInterval       time.Duration // WORKER_POLL_INTERVAL_MS: fallback poll; slots wake on job_submitted
	ClaimScanLimit     int           // WORKER_CLAIM_SCAN_LIMIT: the work budget of one claim call (claim.lua)
	MaxJobBytes        int           // MACHINE_MAX_JOB_MB: larger claimed jobs fail for good, undecoded
	JobTimeout         time.Duration // JOB_TIMEOUT_MINUTES (alias WORKER_JOB_TIMEOUT_MINUTES)
	DrainTimeout       time.Duration // MACHINE_DRAIN_TIMEOUT: how long SIGTERM waits for in-flight jobs
	Lease              time.Duration // MACHINE_LEASE_SECONDS: a job whose machine stops renewing runs again elsewhere
	RetryBackoff       time.Duration // WORKER_RETRY_BACKOFF_SECONDS: wait before the first retry (doubling)
	RetryBackoffMax    time.Duration // WORKER_RETRY_BACKOFF_MAX_SECONDS
	RetryAvoid         time.Duration // WORKER_RETRY_AVOID_SECONDS: a retry goes to another worker first
	InstallTimeout     time.Duration // SERVICE_INSTALL_TIMEOUT
	RunDir             string        // MACHINE_RUN_DIR: pid files, the embedded broker's URL, sockets
	ControlSocket      string        // MACHINE_CONTROL_SOCKET: where `machine console` attaches
	ComfyUIBasePort    int           // COMFYUI_BASE_PORT
	LogLevel           string        // LOG_LEVEL
	CustomerIsolation  string        // WORKER_CUSTOMER_ISOLATION (alias CUSTOMER_ISOLATION): loose|strict
	AllowedCustomers   []string      // ALLOWED_CUSTOMERS
	DeniedCustomers    []string      // DENIED_CUSTOMERS
	Models             map[string][]string
	WorkflowID         string         // WORKER_WORKFLOW_ID: restrict slots to one workflow
	CustomCapabilities map[string]any // WORKER_CAPABILITIES: extra capability keys (JSON object)

	Simulation Simulation

	Services     []ServiceDef // MACHINE_SERVICES_FILE: extra services to supervise
	KeepServices bool         // MACHINE_KEEP_SERVICES: leave services running on exit, for the next machine to adopt
	LogDir       string       // MACHINE_LOG_DIR: service logs
	ComfyArgs    string       // COMFY_ARGS: extra ComfyUI arguments

	ComfyUI        ComfyUI // where and what ComfyUI is installed from
	CacheDir       string  // MACHINE_CACHE_DIR: shared download cache
	InstallStrict  bool    // MACHINE_INSTALL_STRICT: a broken node or model fails the install
	BrowserInstall string  // BROWSER_INSTALL: "apt" lets the machine install Chromium, "none" does not
	BrowserTabs    int     // PLAYWRIGHT_MAX_TABS: tabs the browser runs at once
	P5JS           string  // PLAYWRIGHT_P5_JS: a local p5.min.js for p5 jobs

	// What bounds the traffic jobs cause (core/netguard) and isolates the browser.
	AllowPrivateNetworks []netip.Prefix // MACHINE_ALLOW_PRIVATE_NETWORKS: non-public networks jobs may reach
	BrowserUser          string         // BROWSER_USER: who the browser runs as when the machine runs as root
	BrowserSandbox       bool           // BROWSER_SANDBOX: Chromium's own sandbox (default true)

	OpenAI    OpenAI    // the openai connector's settings
	Replicate RemoteAPI // REPLICATE_API_TOKEN(_FILE), REPLICATE_BASE_URL
	RunPod    RemoteAPI // RUNPOD_API_KEY(_FILE), RUNPOD_BASE_URL, RUNPOD_ENDPOINT_ID
	Assets    Assets    // where jobs' outputs are stored

	// Hardening settings (hardening.go): who reaches the machine and what it fetches.
	HTTPAddr                 string // MACHINE_HTTP_ADDR: the IP address the HTTP server binds
	HTTPMaxConns             int    // MACHINE_HTTP_MAX_CONNS: connections the HTTP server holds at once
	AllowUnverifiedDownloads bool   // MACHINE_ALLOW_UNVERIFIED_DOWNLOADS: models without a sha256, over https only

	Ollama Ollama       // the ollama connector and its daemon (workertypes.go)
	Gemini Gemini       // the gemini connector, gem-nano-banana
	A1111  A1111        // the a1111 connector and its WebUI instances
	Legacy []LegacyNote // the old runtime's variables found, and what became of them (legacy.go)

	Demand Demand // the autoscaler and the model cache (demand.go)
}

// OpenAI configures the openai connector. The key is a secret: never logged or shown.
type OpenAI struct {
	APIKey     string        // OPENAI_API_KEY, or the content of OPENAI_API_KEY_FILE
	BaseURL    string        // OPENAI_BASE_URL
	TextModel  string        // OPENAI_TEXT_MODEL
	ImageModel string        // OPENAI_IMAGE_MODEL
	RatePerSec float64       // OPENAI_RATE_LIMIT (requests a second)
	Timeout    time.Duration // OPENAI_TIMEOUT_SECONDS
}

// RemoteAPI configures a connector to a hosted job API. The key is a secret.
type RemoteAPI struct {
	Key      string
	BaseURL  string
	Endpoint string // RunPod: the default serverless endpoint
}

// Assets says where job outputs go: the local directory, and the S3-compatible storage jobs
// name in ctx.storage.
type Assets struct {
	Dir         string // MACHINE_ASSET_DIR
	BaseURL     string // MACHINE_ASSET_BASE_URL: the public URL of Dir; empty: file:// URLs
	S3Endpoint  string // S3_ENDPOINT (host[:port])
	S3AccessKey string // S3_ACCESS_KEY_ID
	S3SecretKey string // S3_SECRET_ACCESS_KEY (or _FILE); never shown
	S3Region    string // S3_REGION
	S3Secure    bool   // S3_USE_SSL
	S3Bucket    string // S3_BUCKET: when ctx.storage names none
}

// ComfyUI says where ComfyUI comes from and how its connector behaves.
type ComfyUI struct {
	Inactivity time.Duration // COMFYUI_INACTIVITY_TIMEOUT_SECONDS: websocket silence before the history is checked
	RemoteURL  string        // comfyui-remote: from WORKER_COMFYUI_REMOTE_HOST, _PORT, _SECURE
	RemoteKey  string        // WORKER_COMFYUI_REMOTE_API_KEY; never logged
	RepoURL    string        // COMFYUI_REPO_URL
	Branch     string        // COMFYUI_BRANCH
	Commit     string        // COMFYUI_COMMIT
	Dir        string        // COMFYUI_DIR
	Manifest   string        // COMFYUI_MANIFEST: custom nodes and models (JSON)
}

// ServiceDef is an extra service declared in MACHINE_SERVICES_FILE, supervised like the
// services the connectors need (PM2's ecosystem file, in short).
type ServiceDef struct {
	Name          string            `json:"name"`
	Command       []string          `json:"command"`
	Dir           string            `json:"dir,omitempty"`
	Env           map[string]string `json:"env,omitempty"`
	Port          int               `json:"port,omitempty"`
	GPU           *int              `json:"gpu,omitempty"`
	Probe         ProbeDef          `json:"probe,omitempty"`
	MemoryLimitMB float64           `json:"memory_limit_mb,omitempty"`
	StopGraceS    float64           `json:"stop_grace_seconds,omitempty"`
}

// ProbeDef is a service's readiness probe.
type ProbeDef struct {
	Kind    string   `json:"kind,omitempty"` // http, tcp, exec, or empty (ready once started)
	Target  string   `json:"target,omitempty"`
	Command []string `json:"command,omitempty"`
}

// Simulation holds the simulation connector's defaults; a job's payload may override them.
type Simulation struct {
	Duration    time.Duration // WORKER_SIMULATION_PROCESSING_TIME (seconds)
	Steps       int           // WORKER_SIMULATION_STEPS
	FailureRate float64       // WORKER_SIMULATION_FAILURE_RATE (0..1)
}

// ApplyGPUs fills the GPU fields the environment left unset from what the GPU source
// found: environment overrides win. simulated says the source is the fake one.
func (c *Config) ApplyGPUs(count int, model string, memoryGB float64, simulated bool) {
	c.SimulatedGPUs = simulated
	if !simulated && !c.gpuCountSet && c.HasGPU {
		c.GPUCount = count
	}
	if !c.gpuModelSet && model != "" {
		c.GPUModel = model
	}
	if !c.gpuMemorySet && memoryGB > 0 {
		c.GPUMemoryGB = memoryGB
	}
}

// Embedded reports whether the machine runs its own in-process broker.
func (c *Config) Embedded() bool { return c.RedisURL == "" && len(c.RedisSentinels) == 0 }

// RedactedRedisURL returns the broker URL with any password hidden.
func (c *Config) RedactedRedisURL() string { return RedactURL(c.RedisURL) }

// RedactURL hides the password of a URL, and anything past its host but a database number;
// unparsable input is hidden whole.
func RedactURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return "(hidden: not a URL of the form redis://host:port)"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	// Past the host, only a database number is shown: a query or fragment, or a path that is
	// not one, may hold what a password was meant to be (redis://host#:secret@…).
	if rest := !dbPath.MatchString(u.Path) || u.RawQuery != "" || u.ForceQuery || u.Fragment != ""; rest {
		u.Path, u.RawPath, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = "", "", "", false, "", ""
		return u.String() + " (the rest hidden)"
	}
	return u.String()
}

// dbPath is the path of a Redis URL: none, or a database number.
var dbPath = regexp.MustCompile(`^(/[0-9]*)?$`)

// Lookup reads one variable; os.LookupEnv satisfies it.
type Lookup func(key string) (string, bool)

// FromEnv loads the configuration from the process environment.
func FromEnv() (*Config, error) { return Load(os.LookupEnv) }

// defaultRunDir is where a machine keeps its runtime files when MACHINE_RUN_DIR is unset: a
// directory of its own per machine id, so two machines on one host never share a control
// socket or pid files.
func defaultRunDir(xdgRuntimeDir, machineID string) string {
	if d := xdgRuntimeDir; d != "" {
		return filepath.Join(d, "machine", machineID)
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("machine-%d", os.Getuid()), machineID)
}

// Problems is every configuration problem found, one per line.
type Problems []string

func (p Problems) Error() string {
	if len(p) == 1 {
		return "invalid configuration: " + p[0]
	}
	return fmt.Sprintf("invalid configuration (%d problems):\n  - %s", len(p), strings.Join(p, "\n  - "))
}
