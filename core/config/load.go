package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// DefaultConnectors is what a machine runs when WORKER_CONNECTORS is unset: simulated work on
// every GPU, so a bare `make run` shows jobs flowing.
const DefaultConnectors = "simulation"

// DefaultMaxJobMB is the largest job (its whole hash, payload included) a machine takes by
// default: decoding a job costs several times its size in memory.
const DefaultMaxJobMB = 32

// DefaultSimulatedGPUs is the GPU count of the demo when MACHINE_GPU_COUNT is unset.
const DefaultSimulatedGPUs = 2

var (
	machineIDPattern     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	connectorNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
)

// MaxSlots bounds one connector's slot count, in WORKER_CONNECTORS and in every live change
// (console, control socket, HTTP) alike: a count of millions would exhaust the machine.
const MaxSlots = 256

// CheckSlotCount says what is wrong with a slot count, or nil when it lies in [min, MaxSlots].
func CheckSlotCount(n, min int) error {
	if n < min || n > MaxSlots {
		return fmt.Errorf("a slot count must be between %d and %d (got %d)", min, MaxSlots, n)
	}
	return nil
}

// Load reads and validates the configuration. On failure the error is a Problems value that
// lists every problem found, and the Config holds what could be read (a default in place of
// each bad value), for commands that show what they can anyway: `machine plan` prints the plan
// next to the problems, `machine console` finds the socket. Which connectors exist and what
// they need (a key) is checked by core/connectors/registry, not here.
func Load(env Lookup) (*Config, error) {
	r := reader{env: withOldNames(env)} // the old runtime's names of a variable count too (legacy.go)
	c := &Config{}

	host, _ := os.Hostname()
	c.MachineID = r.str("MACHINE_ID", "")
	if c.MachineID == "" {
		c.MachineID = r.str("CONTAINER_NAME", host)
	}
	if c.MachineID == "" {
		c.MachineID = "machine-local"
	}
	if !machineIDPattern.MatchString(c.MachineID) {
		r.problem("MACHINE_ID %q may only use letters, digits, '.', '_' and '-' (it becomes part of every worker id); pick a name such as gpu-box-1", c.MachineID)
	}
	c.MachineType = r.str("MACHINE_TYPE", "")
	c.Pool = r.str("MACHINE_POOL", "")
	r.loadRouting(c)

	c.gpuCountSet = r.str("MACHINE_GPU_COUNT", "") != ""
	c.gpuModelSet = r.str("MACHINE_GPU_MODEL", "") != ""
	c.gpuMemorySet = r.str("MACHINE_GPU_MEMORY_GB", "") != ""
	c.GPUCount = r.intRange("MACHINE_GPU_COUNT", DefaultSimulatedGPUs, 0, 64, "the number of GPUs to use, e.g. 2 (0 for a CPU-only machine)")
	c.SimulatedGPUs = true // until a GPU source says otherwise (ApplyGPUs)
	c.GPUMode = strings.ToLower(r.str("GPU_MODE", "auto"))
	switch c.GPUMode {
	case "auto", "actual", "mock":
	default:
		r.problem("GPU_MODE %q must be auto (NVML when a driver is present), actual (NVML or fail) or mock (simulated GPUs)", c.GPUMode)
	}
	c.GPUSampleEvery = r.millis("MACHINE_GPU_SAMPLE_INTERVAL_MS", time.Second, 100*time.Millisecond, time.Minute, "a number of milliseconds such as 1000")
	c.GPUHourPrice = r.float("MACHINE_GPU_HOUR_PRICE", 0, "the price of one GPU-hour in USD, e.g. 2.49")
	c.KWhPrice = r.float("MACHINE_KWH_PRICE", 0, "the price of one kWh in USD, e.g. 0.12")
	c.HasGPU = r.boolean("MACHINE_HAS_GPU", c.GPUCount > 0)
	if !c.HasGPU {
		c.GPUCount = 0
	}
	c.GPUModel = r.str("MACHINE_GPU_MODEL", "")
	if c.GPUModel == "" && c.GPUCount > 0 {
		c.GPUModel = "Simulated GPU"
	}
	c.GPUMemoryGB = r.float("MACHINE_GPU_MEMORY_GB", 0, "the memory of one GPU in GB, e.g. 24")
	if c.GPUMemoryGB == 0 && c.GPUCount > 0 {
		c.GPUMemoryGB = 24
	}
	c.RAMGB = r.float("MACHINE_RAM_GB", hostRAMGB(), "the machine's RAM in GB, e.g. 64")
	c.CPUCores = r.intRange("MACHINE_CPU_CORES", runtime.NumCPU(), 1, 4096, "the number of CPU cores, e.g. 16")
	c.InstancesPerGPU = r.intRange("PM2_INSTANCES_PER_GPU", 1, 1, 16, "how many instances of a GPU-bound service run on each GPU, usually 1")

	c.Connectors = r.connectors()

	c.RedisURL = r.str("HUB_REDIS_URL", "")
	if c.RedisURL == "" {
		c.RedisURL = r.str("REDIS_URL", "")
	}
	if c.RedisURL != "" {
		if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			r.problem("HUB_REDIS_URL %q is not a redis:// or rediss:// URL; use e.g. redis://:password@redis.example:6379/0, or unset it to run the embedded broker", RedactURL(c.RedisURL))
		}
	}

	for _, a := range strings.Split(r.str("HUB_REDIS_SENTINELS", ""), ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			r.problem("HUB_REDIS_SENTINELS entry %q is not host:port; list the sentinels as e.g. sentinel-1:26379,sentinel-2:26379", a)
			continue
		}
		c.RedisSentinels = append(c.RedisSentinels, a)
	}
	c.RedisMaster = r.str("HUB_REDIS_SENTINEL_MASTER", "")
	c.RedisSentinelPassword = r.str("HUB_REDIS_SENTINEL_PASSWORD", "")
	if len(c.RedisSentinels) > 0 && c.RedisMaster == "" {
		r.problem("HUB_REDIS_SENTINELS is set without HUB_REDIS_SENTINEL_MASTER; set it to the master name the sentinels monitor (e.g. mymaster)")
	}

	c.HealthPort = r.intRange("MACHINE_HEALTH_PORT", 9090, 0, 65535, "a TCP port such as 9090 (0 picks a free one)")
	c.APIToken = r.str("MACHINE_API_TOKEN", "")
	r.hardening(c)
	c.StatusInterval = r.seconds("MACHINE_STATUS_UPDATE_INTERVAL_SECONDS", 10*time.Second, time.Second, 30*time.Second,
		"between 1 and 30 seconds: the monitor marks a machine disconnected after 30 s of silence")
	c.HeartbeatInterval = r.millis("WORKER_HEARTBEAT_INTERVAL_MS", 30*time.Second, time.Second, 30*time.Second,
		"between 1000 and 30000: the heartbeat key expires after 60 s")
	c.PollInterval = r.millis("WORKER_POLL_INTERVAL_MS", 2*time.Second, 10*time.Millisecond, 10*time.Minute,
		"a number of milliseconds such as 2000 (slots also wake at once on job_submitted)")
	c.ClaimScanLimit = r.intRange("WORKER_CLAIM_SCAN_LIMIT", 500, 10, 1000000, "the work one claim call may do, about a pending job each, e.g. 500")
	c.MaxJobBytes = r.intRange("MACHINE_MAX_JOB_MB", DefaultMaxJobMB, 1, 1024, "a size in MiB such as 32: larger jobs fail, since each costs several times its size in memory") << 20
	jt := r.str("JOB_TIMEOUT_MINUTES", "")
	if jt == "" {
		c.JobTimeout = r.minutes("WORKER_JOB_TIMEOUT_MINUTES", 30*time.Minute)
	} else {
		c.JobTimeout = r.minutes("JOB_TIMEOUT_MINUTES", 30*time.Minute)
	}
	c.DrainTimeout = r.duration("MACHINE_DRAIN_TIMEOUT", 60*time.Second, "a duration such as 60s or 5m")
	c.Lease = r.seconds("MACHINE_LEASE_SECONDS", 5*time.Second, time.Second, 10*time.Minute, "a number of seconds such as 5")
	c.RetryBackoff = r.seconds("WORKER_RETRY_BACKOFF_SECONDS", 2*time.Second, 0, time.Hour, "a number of seconds such as 2 (0: retry at once)")
	c.RetryBackoffMax = r.seconds("WORKER_RETRY_BACKOFF_MAX_SECONDS", time.Minute, 0, 24*time.Hour, "a number of seconds such as 60")
	c.RetryAvoid = r.seconds("WORKER_RETRY_AVOID_SECONDS", 30*time.Second, 0, time.Hour, "a number of seconds such as 30 (0: any worker)")
	c.InstallTimeout = r.duration("SERVICE_INSTALL_TIMEOUT", 30*time.Minute, "a duration such as 30m, or a number of seconds")
	c.RunDir = r.str("MACHINE_RUN_DIR", defaultRunDir(r.str("XDG_RUNTIME_DIR", ""), c.MachineID))
	c.Workspace = r.str("MACHINE_WORKSPACE", defaultWorkspace())
	c.ControlSocket = r.str("MACHINE_CONTROL_SOCKET", filepath.Join(c.RunDir, "control.sock"))
	c.ComfyUIBasePort = r.intRange("COMFYUI_BASE_PORT", 8188, 1, 65000, "a TCP port such as 8188")
	c.LogLevel = strings.ToLower(r.str("LOG_LEVEL", "info"))
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		r.problem("LOG_LEVEL %q is not a level; use debug, info, warn or error", c.LogLevel)
	}

	iso := r.str("WORKER_CUSTOMER_ISOLATION", "")
	if iso == "" {
		iso = r.str("CUSTOMER_ISOLATION", "loose")
	}
	switch iso {
	case "loose", "strict":
		c.CustomerIsolation = iso
	default:
		r.problem("WORKER_CUSTOMER_ISOLATION %q must be loose or strict", iso)
	}
	c.AllowedCustomers = r.list("ALLOWED_CUSTOMERS")
	c.DeniedCustomers = r.list("DENIED_CUSTOMERS")
	c.Models = r.models()
	c.WorkflowID = r.str("WORKER_WORKFLOW_ID", "")
	c.CustomCapabilities = r.customCaps()

	c.KeepServices = r.boolean("MACHINE_KEEP_SERVICES", false)
	c.LogDir = r.str("MACHINE_LOG_DIR", defaultLogDir(c.RunDir))
	c.ComfyArgs = r.str("COMFY_ARGS", "")
	c.Services = r.services()
	c.ComfyUI = ComfyUI{
		RepoURL:  r.str("COMFYUI_REPO_URL", "https://github.com/stakeordie/ComfyUI.git"),
		Branch:   r.str("COMFYUI_BRANCH", "forward"),
		Commit:   r.str("COMFYUI_COMMIT", ""),
		Dir:      r.str("COMFYUI_DIR", filepath.Join(c.Workspace, "ComfyUI")),
		Manifest: r.str("COMFYUI_MANIFEST", ""),
		Inactivity: r.seconds("COMFYUI_INACTIVITY_TIMEOUT_SECONDS", 2*time.Minute, time.Second, 24*time.Hour,
			"a number of seconds such as 120"),
		RemoteKey: r.secret("WORKER_COMFYUI_REMOTE_API_KEY"),
	}
	if host := r.str("WORKER_COMFYUI_REMOTE_HOST", ""); host != "" {
		scheme := "http"
		if r.boolean("WORKER_COMFYUI_REMOTE_SECURE", false) {
			scheme = "https"
		}
		c.ComfyUI.RemoteURL = fmt.Sprintf("%s://%s:%d", scheme, host, r.intRange("WORKER_COMFYUI_REMOTE_PORT", 8188, 1, 65535, "a TCP port such as 8188"))
	}
	c.CacheDir = r.str("MACHINE_CACHE_DIR", filepath.Join(c.Workspace, ".cache", "machine"))
	c.InstallStrict = r.boolean("MACHINE_INSTALL_STRICT", false)
	c.OpenAI = OpenAI{
		APIKey: r.secret("OPENAI_API_KEY"), BaseURL: r.str("OPENAI_BASE_URL", "https://api.openai.com/v1"),
		TextModel: r.str("OPENAI_TEXT_MODEL", "gpt-4o-mini"), ImageModel: r.str("OPENAI_IMAGE_MODEL", "gpt-image-1"),
		RatePerSec: r.float("OPENAI_RATE_LIMIT", 5, "requests a second, e.g. 5"),
		Timeout:    r.seconds("OPENAI_TIMEOUT_SECONDS", 2*time.Minute, time.Second, time.Hour, "a number of seconds such as 120"),
	}
	c.Replicate = RemoteAPI{Key: r.secret("REPLICATE_API_TOKEN"), BaseURL: r.str("REPLICATE_BASE_URL", "https://api.replicate.com/v1")}
	c.RunPod = RemoteAPI{Key: r.secret("RUNPOD_API_KEY"), BaseURL: r.str("RUNPOD_BASE_URL", "https://api.runpod.ai/v2"),
		Endpoint: r.str("RUNPOD_ENDPOINT_ID", "")}
	c.Assets = Assets{Dir: r.str("MACHINE_ASSET_DIR", filepath.Join(c.Workspace, "assets")), BaseURL: r.str("MACHINE_ASSET_BASE_URL", ""),
		S3Endpoint: r.str("S3_ENDPOINT", ""), S3AccessKey: r.str("S3_ACCESS_KEY_ID", ""), S3SecretKey: r.secret("S3_SECRET_ACCESS_KEY"),
		S3Region: r.str("S3_REGION", ""), S3Secure: r.boolean("S3_USE_SSL", true), S3Bucket: r.str("S3_BUCKET", "")}
	c.BrowserInstall = r.str("BROWSER_INSTALL", "none")
	c.BrowserTabs = r.intRange("PLAYWRIGHT_MAX_TABS", 4, 1, 64, "a number of tabs such as 4")
	c.P5JS = r.str("PLAYWRIGHT_P5_JS", "")
	if c.BrowserInstall != "apt" && c.BrowserInstall != "none" {
		r.problem("BROWSER_INSTALL %q must be apt (the machine may apt-get install chromium) or none", c.BrowserInstall)
	}
	r.jobNetwork(c)

	c.Simulation.Duration = r.seconds("WORKER_SIMULATION_PROCESSING_TIME", 5*time.Second, 0, 24*time.Hour, "a number of seconds such as 5")
	c.Simulation.Steps = r.intRange("WORKER_SIMULATION_STEPS", 10, 1, 10000, "a number of progress steps such as 10")
	c.Simulation.FailureRate = r.float("WORKER_SIMULATION_FAILURE_RATE", 0, "a probability between 0 and 1, e.g. 0.1")
	if c.Simulation.FailureRate < 0 || c.Simulation.FailureRate > 1 {
		r.problem("WORKER_SIMULATION_FAILURE_RATE %v must be between 0 and 1", c.Simulation.FailureRate)
	}

	r.workerTypes(c) // ollama, gemini, a1111 (workertypes.go)
	r.legacy(env, c) // the old runtime's variables: noted, refused or advertised (legacy.go)
	r.demand(c)

	if len(r.problems) > 0 {
		return c, r.problems
	}
	return c, nil
}

type reader struct {
	env      Lookup
	problems Problems
}

func (r *reader) problem(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

func (r *reader) str(key, def string) string {
	if v, ok := r.env(key); ok && strings.TrimSpace(v) != "" {
		return strings.TrimSpace(v)
	}
	return def
}

func (r *reader) intRange(key string, def, lo, hi int, fix string) int {
	s := r.str(key, "")
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		r.problem("%s=%q is not valid; set it to %s", key, s, fix)
		return def
	}
	return n
}

func (r *reader) float(key string, def float64, fix string) float64 {
	s := r.str(key, "")
	if s == "" {
		return def
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		r.problem("%s=%q is not valid; set it to %s", key, s, fix)
		return def
	}
	return f
}

func (r *reader) boolean(key string, def bool) bool {
	s := r.str(key, "")
	if s == "" {
		return def
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		r.problem("%s=%q is not true or false", key, s)
		return def
	}
	return b
}

func (r *reader) scaled(key string, def, unit, lo, hi time.Duration, fix string) time.Duration {
	s := r.str(key, "")
	if s == "" {
		return def
	}
	f, err := strconv.ParseFloat(s, 64)
	d := time.Duration(f * float64(unit))
	if err != nil || d < lo || d > hi {
		r.problem("%s=%q is not valid; set it to %s", key, s, fix)
		return def
	}
	return d
}

func (r *reader) seconds(key string, def, lo, hi time.Duration, fix string) time.Duration {
	return r.scaled(key, def, time.Second, lo, hi, fix)
}

func (r *reader) millis(key string, def, lo, hi time.Duration, fix string) time.Duration {
	return r.scaled(key, def, time.Millisecond, lo, hi, fix)
}

func (r *reader) minutes(key string, def time.Duration) time.Duration {
	return r.scaled(key, def, time.Minute, time.Second, 7*24*time.Hour, "a number of minutes such as 30")
}

// duration accepts Go durations ("90s", "5m") and plain seconds ("600").
func (r *reader) duration(key string, def time.Duration, fix string) time.Duration {
	s := r.str(key, "")
	if s == "" {
		return def
	}
	if n, err := strconv.ParseFloat(s, 64); err == nil && n > 0 {
		return time.Duration(n * float64(time.Second))
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		r.problem("%s=%q is not valid; set it to %s", key, s, fix)
		return def
	}
	return d
}

// list accepts a JSON array of strings or comma-separated values, as the old worker did.
func (r *reader) list(key string) []string {
	s := r.str(key, "")
	if s == "" {
		return nil
	}
	if strings.HasPrefix(s, "[") {
		var out []string
		if err := json.Unmarshal([]byte(s), &out); err != nil {
			r.problem("%s is not a JSON array of strings (%v); use [\"a\",\"b\"] or a,b", key, err)
		}
		return out
	}
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// models reads WORKER_MODELS: a JSON object {service: [model,…]}, or a list applied to every
// service the machine serves (resolved when capabilities are built).
func (r *reader) models() map[string][]string {
	s := r.str("WORKER_MODELS", "")
	if s == "" {
		return nil
	}
	if strings.HasPrefix(s, "{") {
		var m map[string][]string
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			r.problem("WORKER_MODELS is not a JSON object of service to model list (%v); use {\"comfyui\":[\"sdxl\"]} or sdxl,flux", err)
		}
		return m
	}
	return map[string][]string{"*": r.list("WORKER_MODELS")}
}

func (r *reader) customCaps() map[string]any {
	s := r.str("WORKER_CAPABILITIES", "")
	if s == "" {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil || m == nil {
		r.problem("WORKER_CAPABILITIES is not a JSON object (%v); use e.g. {\"features\":[\"upscale\"],\"region\":\"eu\"}", err)
		return nil
	}
	return m
}

// connectors parses WORKER_CONNECTORS (or its old name WORKERS): name[,name…] and name:count,
// where count is a whole number or auto.
func (r *reader) connectors() []Connector {
	key := "WORKER_CONNECTORS"
	s := r.str(key, "")
	if old := r.str("WORKERS", ""); old != "" {
		if s != "" && s != old {
			r.problem("WORKER_CONNECTORS=%q and WORKERS=%q disagree; WORKERS is the old name of WORKER_CONNECTORS, so set only one", s, old)
		}
		if s == "" {
			key, s = "WORKERS", old
		}
	}
	if s == "" {
		s = DefaultConnectors
	}
	var out []Connector
	seen := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, count, hasCount := strings.Cut(item, ":")
		name = strings.TrimSpace(name)
		c := Connector{Name: name, Auto: true}
		if !connectorNamePattern.MatchString(name) {
			r.problem("%s entry %q is not a connector name; list names such as simulation or comfyui:2", key, item)
			continue
		}
		if seen[name] {
			r.problem("%s lists %q twice; give it once, with a count such as %s:2", key, name, name)
			continue
		}
		seen[name] = true
		if hasCount && strings.TrimSpace(count) != "auto" {
			n, err := strconv.Atoi(strings.TrimSpace(count))
			if err != nil || CheckSlotCount(n, 0) != nil {
				r.problem("%s entry %q has a bad count; use %s:N with N between 0 and %d, or %s:auto", key, item, name, MaxSlots, name)
				continue
			}
			c.Count, c.Auto = n, false
		}
		out = append(out, c)
	}
	if len(out) == 0 && len(r.problems) == 0 {
		r.problem("%s is empty; name at least one connector, e.g. %s=simulation", key, key)
	}
	return out
}

// secret reads KEY, or the file named by KEY_FILE (a mounted secret). Its value never appears
// in a problem.
func (r *reader) secret(key string) string {
	if v := r.str(key, ""); v != "" {
		return v
	}
	path := r.str(key+"_FILE", "")
	if path == "" {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		r.problem("%s_FILE %s cannot be read (%v); point it at the file holding the secret", key, path, err)
		return ""
	}
	return strings.TrimSpace(string(b))
}

// defaultLogDir is /workspace/logs (the old runtime's) where /workspace exists.
func defaultLogDir(runDir string) string {
	if st, err := os.Stat("/workspace"); err == nil && st.IsDir() {
		return "/workspace/logs"
	}
	return filepath.Join(runDir, "logs")
}

var serviceNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)

// services reads MACHINE_SERVICES_FILE, a JSON array of ServiceDef.
func (r *reader) services() []ServiceDef {
	path := r.str("MACHINE_SERVICES_FILE", "")
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		r.problem("MACHINE_SERVICES_FILE %s cannot be read (%v); point it at a JSON array of services", path, err)
		return nil
	}
	var defs []ServiceDef
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&defs); err != nil {
		r.problem("MACHINE_SERVICES_FILE %s is not a JSON array of services (%v); see the README for the fields", path, err)
		return nil
	}
	seen := map[string]bool{}
	for i, d := range defs {
		where := fmt.Sprintf("MACHINE_SERVICES_FILE %s, service %d", path, i+1)
		switch {
		case !serviceNamePattern.MatchString(d.Name):
			r.problem("%s: name %q must be lower-case letters, digits, '.', '_' or '-'", where, d.Name)
		case seen[d.Name]:
			r.problem("%s: name %q is used twice", where, d.Name)
		}
		seen[d.Name] = true
		if len(d.Command) == 0 {
			r.problem("%s (%s): command is empty; give the program and its arguments as a list", where, d.Name)
		}
		switch d.Probe.Kind {
		case "", "tcp", "http":
			if d.Probe.Kind != "" && d.Probe.Target == "" {
				r.problem("%s (%s): a %s probe needs a target", where, d.Name, d.Probe.Kind)
			}
		case "exec":
			if len(d.Probe.Command) == 0 {
				r.problem("%s (%s): an exec probe needs a command", where, d.Name)
			}
		default:
			r.problem("%s (%s): probe kind %q must be http, tcp or exec", where, d.Name, d.Probe.Kind)
		}
	}
	return defs
}

// defaultWorkspace is /workspace (the image's) where it exists, else the current directory.
func defaultWorkspace() string {
	if st, err := os.Stat("/workspace"); err == nil && st.IsDir() {
		return "/workspace"
	}
	if wd, err := os.Getwd(); err == nil {
		return wd
	}
	return "/"
}

// hostRAMGB reads the host's memory from /proc/meminfo; 0 where that is unavailable.
func hostRAMGB() float64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return float64(int(kb/1024/1024*10+0.5)) / 10
		}
	}
	return 0
}
