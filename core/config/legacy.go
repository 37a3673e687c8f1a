package config

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// The old runtime (emp-job-queue's PM2 machine and its Node workers) read some 300 environment
// variables. Each one is classified here, once: honoured under its own name with the same
// meaning, renamed (read as the new variable, same meaning), ignored (no effect here; the note
// names what replaces it), or refused (a value this machine cannot honour: it will not start).
// `machine config validate` and `machine migrate` list what they find; docs/migration.md holds
// the whole table.

// Treatment is what the machine does with a variable of the old runtime.
type Treatment string

const (
	Honoured Treatment = "honoured" // read under its own name, with the same meaning
	Renamed  Treatment = "renamed"  // read as its new name, with the same meaning
	Ignored  Treatment = "ignored"  // no effect here; the note says what replaces it
	Refused  Treatment = "refused"  // a value the machine cannot honour: it refuses to start
)

// OldVariable is one variable of the old runtime and what became of it.
type OldVariable struct {
	Name      string
	Treatment Treatment
	// Replacement is the new variable (renamed), or what takes the old one's place.
	Replacement string
	// Note says why, in one sentence fragment.
	Note string

	refuseIf func(value string) bool           // refused only for such values (nil: any value)
	convert  func(value string) (string, bool) // renamed: old value → new value
	when     func(env Lookup) bool             // renamed: applies only when true
	caps     func(value string) (string, any)  // honoured as a claim capability key
}

// LegacyNote says what happened to one old variable found in the environment.
type LegacyNote struct {
	Var       string
	Treatment Treatment
	Sentence  string
}

// RefusesValue reports whether the machine refuses to start with this value of the variable.
func (v OldVariable) RefusesValue(value string) bool {
	return v.Treatment == Refused && (v.refuseIf == nil || v.refuseIf(value))
}

// NoteFor says what becomes of the old variable with this value in env; noted is false for a
// variable honoured as it is.
func (v OldVariable) NoteFor(value string, env Lookup) (note LegacyNote, noted bool) {
	switch {
	case v.Treatment == Honoured:
		return LegacyNote{}, false
	case v.Treatment == Renamed && v.when != nil && !v.when(env):
		return LegacyNote{v.Name, Ignored, fmt.Sprintf("%s is ignored: it was %s, and GPU_MODE is not mock; set %s to override the detected count", v.Name, v.Note, v.Replacement)}, true
	case v.Treatment == Refused && !v.RefusesValue(value):
		return LegacyNote{v.Name, Ignored, v.Sentence(value)}, true
	}
	return LegacyNote{v.Name, v.Treatment, v.Sentence(value)}, true
}

// Sentence is the one sentence said about the variable with this value.
func (v OldVariable) Sentence(value string) string {
	switch v.Treatment {
	case Renamed:
		return fmt.Sprintf("%s is the old name of %s and is read as %s (%s); rename it", v.Name, v.Replacement, v.Replacement, v.Note)
	case Ignored:
		return fmt.Sprintf("%s is ignored: %s", v.Name, v.Note)
	case Refused:
		if v.refuseIf == nil { // refused whatever its value, which may be a secret: not shown
			return fmt.Sprintf("%s cannot be honoured: %s", v.Name, v.Note)
		}
		if !v.refuseIf(value) {
			return fmt.Sprintf("%s=%s is ignored: it asks for what this machine does anyway (%s)", v.Name, value, v.Note)
		}
		return fmt.Sprintf("%s=%s cannot be honoured: %s", v.Name, value, v.Note)
	}
	return fmt.Sprintf("%s is honoured: %s", v.Name, v.Note)
}

func honoured(note string) OldVariable { return OldVariable{Treatment: Honoured, Note: note} }
func ignored(note string) OldVariable  { return OldVariable{Treatment: Ignored, Note: note} }
func renamed(to, note string) OldVariable {
	return OldVariable{Treatment: Renamed, Replacement: to, Note: note}
}
func refused(note string, refuseIf func(string) bool) OldVariable {
	return OldVariable{Treatment: Refused, Note: note, refuseIf: refuseIf}
}

// capability is an old WORKER_* variable the old worker put into its claim capabilities under
// key; this machine advertises it the same way (WORKER_CAPABILITIES wins on a clash).
func capability(key, kind string) OldVariable {
	v := honoured("advertised as the claim capability " + key + ", as the old worker did")
	v.caps = func(s string) (string, any) {
		switch kind {
		case "list":
			return key, parseList(s)
		case "bool":
			return key, s == "true"
		case "int":
			n, err := strconv.Atoi(s)
			if err != nil {
				return key, nil
			}
			return key, n
		}
		return key, s
	}
	return v
}

func parseList(s string) []string {
	var out []string
	if strings.HasPrefix(s, "[") && json.Unmarshal([]byte(s), &out) == nil {
		return out
	}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func notEqual(want string) func(string) bool {
	return func(v string) bool { return strings.TrimSpace(strings.ToLower(v)) != want }
}

func msToSeconds(v string) (string, bool) {
	ms, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return "", false
	}
	return strconv.FormatFloat(ms/1000, 'f', -1, 64), true
}

func mockGPUs(env Lookup) bool {
	v, _ := env("GPU_MODE")
	return strings.EqualFold(strings.TrimSpace(v), "mock")
}

// Notes shared by groups of old variables.
const (
	noteBuild      = "a build or deployment setting of the old image; `machine version` names this build"
	noteTelemetry  = "OpenTelemetry and log shipping are gone; scrape /metrics (Prometheus) and collect the JSON logs on stderr and in MACHINE_LOG_DIR"
	noteLogging    = "the machine logs JSON to stderr and each service to MACHINE_LOG_DIR/<service>.log, rotated at 10 MiB with 3 kept"
	notePaths      = "a path inside the old image; the machine's paths are MACHINE_WORKSPACE, MACHINE_RUN_DIR, MACHINE_LOG_DIR and MACHINE_CACHE_DIR"
	notePerWorker  = "the old generator set it for each worker process; the machine derives it for each slot"
	noteBundle     = "the worker is built into the machine binary; nothing is downloaded or copied"
	noteLocalComfy = "the machine runs ComfyUI itself on 127.0.0.1:COMFYUI_BASE_PORT+i; for a ComfyUI elsewhere use the comfyui-remote connector with WORKER_COMFYUI_REMOTE_HOST"
	noteSlotCount  = "a slot runs one job at a time, as the old workers did; set the number of slots with WORKER_CONNECTORS=<connector>:N"
	noteAPIOnly    = "the machine talks only to Redis; the API, webhooks and the monitor read what it writes there"
	noteRetries    = "a failed request fails the attempt, and the job's own retries (max_retries, WORKER_RETRY_BACKOFF_SECONDS) take over"
	noteRESTGen    = "the generic REST connectors have no worker type in the old service mapping, so no machine ran them"
	noteSimService = "the simulation connector runs in the machine, without a separate simulation service; set WORKER_SIMULATION_PROCESSING_TIME and WORKER_SIMULATION_STEPS"
	notePayload    = "jobs set it in their payload"
	noteInformOnly = "the old worker advertised it, but no rule of findMatchingJob reads it"
	noteHealth     = "services have readiness probes and restart with backoff (core/supervisor); a machine that stops renewing its leases (MACHINE_LEASE_SECONDS) has its jobs run elsewhere"
	noteAzure      = "Azure Blob storage is not supported here, so jobs whose ctx.storage.provider is azure would fail; move the storage to an S3-compatible service (S3_ENDPOINT, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY) or keep this machine on the old runtime"
	noteCPUMode    = "set MACHINE_HAS_GPU=false for a CPU-only plan, where ComfyUI and A1111 run on the CPU"
	noteComponents = "component installs from the EmProps API are not supported; list the custom nodes and models in COMFYUI_MANIFEST instead"
)

// oldVariables is the old runtime's configuration, variable by variable.
var oldVariables = map[string]OldVariable{
	// The machine and its slots.
	"WORKERS":                                honoured("the old name of WORKER_CONNECTORS, same syntax (type:count, count a number or auto)"),
	"WORKER_CONNECTORS":                      honoured("same syntax as WORKERS"),
	"CONNECTORS":                             ignored("the old generator gave each worker process its one type; the machine runs every type of WORKER_CONNECTORS"),
	"MACHINE_ID":                             honoured("without the old random 8-hex suffix, so the identity is stable across restarts"),
	"CONTAINER_NAME":                         honoured("the machine id when MACHINE_ID is unset"),
	"MACHINE_BASE_ID":                        ignored("set MACHINE_ID to the machine's stable name (the old runtime built it from MACHINE_BASE_ID and TELEMETRY_ENV)"),
	"TELEMETRY_ENV":                          ignored("set MACHINE_ID to the machine's stable name (the old runtime built it from MACHINE_BASE_ID and TELEMETRY_ENV)"),
	"MACHINE_INSTANCE":                       ignored(noteBuild),
	"HOSTNAME":                               honoured("the machine id when neither MACHINE_ID nor CONTAINER_NAME is set (read from the system)"),
	"WORKER_ID":                              ignored("slot ids are ${MACHINE_ID}-worker-${connector}-${i}, the form the old generator gave WORKER_ID"),
	"WORKER_ID_PREFIX":                       ignored("slot ids are ${MACHINE_ID}-worker-${connector}-${i}, the form the old generator gave WORKER_ID"),
	"HUB_REDIS_URL":                          honoured("the broker"),
	"REDIS_URL":                              honoured("the broker when HUB_REDIS_URL is unset"),
	"MACHINE_HEALTH_PORT":                    honoured("the HTTP port of /health, /status and the rest"),
	"MACHINE_STATUS_UPDATE_INTERVAL_SECONDS": honoured("the period of machine:status, 1 to 30 seconds"),
	"UNIFIED_MACHINE_STATUS":                 ignored("the machine always publishes the unified machine:status message"),
	"WORKER_POLL_INTERVAL_MS":                honoured("now only a fallback: slots wake at once on job_submitted"),
	"POLL_INTERVAL_MS":                       renamed("WORKER_POLL_INTERVAL_MS", "the poll period the old generator passed to each worker"),
	"WORKER_HEARTBEAT_INTERVAL_MS":           honoured("the slot heartbeat"),
	"JOB_TIMEOUT_MINUTES":                    honoured("an attempt longer than this fails and may be retried"),
	"WORKER_JOB_TIMEOUT_MINUTES":             honoured("the old generator's name of JOB_TIMEOUT_MINUTES"),
	"WORKER_MAX_CONCURRENT_JOBS":             ignored(noteSlotCount),
	"LOG_LEVEL":                              honoured("debug, info, warn or error"),
	"MACHINE_LOG_LEVEL":                      renamed("LOG_LEVEL", "the machine's log level"),
	"SHUTDOWN_REASON":                        ignored("SIGTERM drains: running jobs get MACHINE_DRAIN_TIMEOUT, the rest go back to the queue"),
	"STARTUP_GRACE_PERIOD":                   ignored("slots claim as soon as the services they need answer their readiness probes"),

	// GPUs and hardware.
	"GPU_MODE":              honoured("actual or mock as before; the new default auto uses NVML when a driver answers, where the old default was actual"),
	"NUM_GPUS":              {Treatment: Renamed, Replacement: "MACHINE_GPU_COUNT", Note: "the GPU count of a GPU_MODE=mock machine", when: mockGPUs},
	"MACHINE_NUM_GPUS":      {Treatment: Renamed, Replacement: "MACHINE_GPU_COUNT", Note: "the GPU count of a GPU_MODE=mock machine", when: mockGPUs},
	"MOCK_GPU_NUM":          {Treatment: Renamed, Replacement: "MACHINE_GPU_COUNT", Note: "the GPU count of a GPU_MODE=mock machine", when: mockGPUs},
	"MOCK_GPU":              ignored("set GPU_MODE=mock for simulated GPUs"),
	"MACHINE_HAS_GPU":       honoured("false makes a CPU-only plan"),
	"MACHINE_GPU_MODEL":     honoured("the advertised GPU model"),
	"MACHINE_GPU_MEMORY_GB": honoured("the advertised GPU memory"),
	"MACHINE_CPU_CORES":     honoured("the advertised CPU cores"),
	"MACHINE_RAM_GB":        honoured("the advertised RAM"),
	"MACHINE_NUM_CPUS":      renamed("MACHINE_CPU_CORES", "the advertised CPU cores"),
	"MACHINE_DISK_GB":       ignored("the disk is measured (host metrics of MACHINE_WORKSPACE)"),
	"STORAGE_GB":            ignored("the disk is measured (host metrics of MACHINE_WORKSPACE)"),
	"NETWORK_SPEED":         ignored(noteInformOnly),
	"WORKER_RAM_GB":         renamed("MACHINE_RAM_GB", "the RAM the worker advertised"),
	"RAM_GB":                renamed("MACHINE_RAM_GB", "the RAM the Ollama worker advertised"),
	"WORKER_GPU_MEMORY_GB":  renamed("MACHINE_GPU_MEMORY_GB", "the GPU memory the worker advertised"),
	"GPU_MEMORY_GB":         renamed("MACHINE_GPU_MEMORY_GB", "the GPU memory a service process advertised"),
	"WORKER_GPU_MODEL":      renamed("MACHINE_GPU_MODEL", "the GPU model the worker advertised"),
	"GPU_MODEL":             renamed("MACHINE_GPU_MODEL", "the GPU model a service process advertised"),
	"GPU_ID":                ignored(notePerWorker),
	"CUDA_VISIBLE_DEVICES":  ignored("the machine pins each service to its GPU itself; set MACHINE_GPU_COUNT to use fewer GPUs"),
	"PM2_HOME":              ignored("there is no PM2: the supervisor keeps its pid files in MACHINE_RUN_DIR"),

	// Capabilities the old worker advertised.
	"WORKER_CUSTOMER_ISOLATION": honoured("loose or strict"),
	"CUSTOMER_ISOLATION":        honoured("the old name of WORKER_CUSTOMER_ISOLATION"),
	"ALLOWED_CUSTOMERS":         honoured("a JSON array or CSV"),
	"DENIED_CUSTOMERS":          honoured("a JSON array or CSV"),
	"WORKER_WORKFLOW_ID":        honoured("restricts the slots to one workflow"),
	"WORKER_MODELS": {Treatment: Honoured, Note: "the models capability; a list is also advertised as available_models, as the old worker did",
		caps: func(s string) (string, any) {
			if strings.HasPrefix(strings.TrimSpace(s), "{") {
				return "available_models", nil
			}
			return "available_models", parseList(s)
		}},
	"WORKER_ASSET_TYPE":           capability("asset_type", "list"),
	"WORKER_PERFORMANCE_TIER":     capability("performance_tier", "string"),
	"WORKER_FEATURES":             capability("features", "list"),
	"WORKER_SPECIALIZATION":       capability("specialization", "string"),
	"WORKER_SLA_TIER":             capability("sla_tier", "string"),
	"WORKER_LIMITATIONS":          capability("limitations", "list"),
	"WORKER_AVAILABILITY":         capability("availability", "string"),
	"WORKER_EXPERIMENTAL_MODE":    capability("experimental_mode", "bool"),
	"WORKER_MEMORY_CONSTRAINED":   capability("memory_constrained", "bool"),
	"WORKER_MAX_BATCH_SIZE":       capability("max_batch_size", "int"),
	"WORKER_MULTI_SERVICE":        capability("multi_service", "bool"),
	"WORKER_COMFYUI_VERSION":      capability("comfyui_version", "string"),
	"WORKER_A1111_VERSION":        capability("a1111_version", "string"),
	"DEBUGGING_ENABLED":           capability("debugging_enabled", "bool"),
	"DEVELOPMENT_MODE":            capability("development_mode", "bool"),
	"WORKER_DEBUGGING_ENABLED":    renamed("DEBUGGING_ENABLED", "the old generator passed it on as DEBUGGING_ENABLED, advertised as debugging_enabled"),
	"WORKER_DEVELOPMENT_MODE":     renamed("DEVELOPMENT_MODE", "the old generator passed it on as DEVELOPMENT_MODE, advertised as development_mode"),
	"WORKER_REGION":               honoured("advertised as location.region, as the old worker did"),
	"WORKER_COUNTRY":              honoured("advertised as location.country when WORKER_REGION is set"),
	"WORKER_COMPLIANCE":           honoured("advertised as location.compliance_zones when WORKER_REGION is set"),
	"WORKER_DATA_RESIDENCY":       honoured("advertised as location.data_residency_requirements when WORKER_REGION is set"),
	"WORKER_COST_TIER":            honoured("advertised as cost.tier, as the old worker did"),
	"WORKER_RATE_PER_HOUR":        honoured("advertised as cost.rate_per_hour when WORKER_COST_TIER is set"),
	"WORKER_RATE_PER_JOB":         honoured("advertised as cost.rate_per_job when WORKER_COST_TIER is set"),
	"WORKER_MINIMUM_CHARGE":       honoured("advertised as cost.minimum_charge when WORKER_COST_TIER is set"),
	"QUALITY_LEVELS":              ignored(noteInformOnly + " (it was performance.quality_levels)"),
	"WORKER_QUALITY_LEVELS":       ignored(noteInformOnly + " (it was performance.quality_levels)"),
	"MAX_PROCESSING_TIME_MINUTES": ignored(noteInformOnly + "; JOB_TIMEOUT_MINUTES limits an attempt"),
	"MAX_CONCURRENT_CUSTOMERS":    ignored(noteInformOnly),

	// Services in place of PM2.
	"COMFYUI_BASE_PORT":                         honoured("instance i listens on COMFYUI_BASE_PORT+i"),
	"COMFYUI_PORT_START":                        renamed("COMFYUI_BASE_PORT", "the port of the first ComfyUI"),
	"COMFYUI_PORT_INCREMENT":                    refused("instances always listen on consecutive ports (COMFYUI_BASE_PORT+i)", notEqual("1")),
	"COMFYUI_INSTANCES_PER_GPU":                 renamed("PM2_INSTANCES_PER_GPU", "ComfyUI instances on each GPU"),
	"COMFY_ARGS":                                honoured("extra arguments of every ComfyUI"),
	"COMFYUI_CPU_MODE":                          refused(noteCPUMode, notEqual("false")),
	"TEST_MODE":                                 refused(noteCPUMode+" (TEST_MODE ran ComfyUI and A1111 on the CPU)", notEqual("false")),
	"COMFYUI_REPO_URL":                          honoured("where ComfyUI comes from"),
	"COMFYUI_BRANCH":                            honoured("the branch of COMFYUI_REPO_URL"),
	"COMFYUI_COMMIT":                            honoured("the commit of COMFYUI_REPO_URL"),
	"COMPONENTS":                                refused(noteComponents, nil),
	"COLLECTIONS":                               refused(noteComponents, nil),
	"EMPROPS_API_URL":                           ignored(noteComponents),
	"EMPROPS_API_KEY":                           ignored(noteComponents),
	"SKIP_MODEL_DOWNLOAD":                       ignored("models come from COMFYUI_MANIFEST; leave its models out to download none"),
	"STATIC_MODELS":                             ignored("list model files in COMFYUI_MANIFEST; they are downloaded into a shared cache and linked into place"),
	"CLOUD_MODELS_CONTAINER":                    ignored("list model URLs in COMFYUI_MANIFEST"),
	"HF_TOKEN":                                  honoured("custom nodes' env files of COMFYUI_MANIFEST may use ${HF_TOKEN}"),
	"CIVITAI_TOKEN":                             honoured("custom nodes' env files of COMFYUI_MANIFEST may use ${CIVITAI_TOKEN}"),
	"COMFYUI_HOST":                              ignored(noteLocalComfy),
	"COMFYUI_PORT":                              ignored(notePerWorker),
	"COMFYUI_WS_URL":                            ignored(noteLocalComfy),
	"COMFYUI_USERNAME":                          ignored(noteLocalComfy),
	"COMFYUI_PASSWORD":                          ignored(noteLocalComfy),
	"COMFYUI_API_KEY":                           ignored(noteLocalComfy),
	"COMFYUI_SECURE":                            ignored(noteLocalComfy),
	"COMFYUI_TIMEOUT_SECONDS":                   ignored("JOB_TIMEOUT_MINUTES limits an attempt, and COMFYUI_INACTIVITY_TIMEOUT_SECONDS a silent ComfyUI"),
	"COMFYUI_HEARTBEAT_MS":                      ignored("the connector checks a silent ComfyUI after COMFYUI_INACTIVITY_TIMEOUT_SECONDS"),
	"COMFYUI_RECONNECT_DELAY_MS":                ignored("the connector checks a silent ComfyUI after COMFYUI_INACTIVITY_TIMEOUT_SECONDS and reconnects"),
	"COMFYUI_MAX_RECONNECT":                     ignored("a ComfyUI that does not come back fails the attempt, which is retried"),
	"COMFYUI_RETRY_ATTEMPTS":                    ignored(noteRetries),
	"COMFYUI_RETRY_DELAY_SECONDS":               ignored(noteRetries),
	"COMFYUI_MAX_CONCURRENT_JOBS":               ignored(noteSlotCount),
	"COMFYUI_RESOURCE_BINDING":                  ignored("the plan binds GPU-bound slots to their GPU (machine plan shows it)"),
	"WEBSOCKET_INACTIVITY_TIMEOUT_MS":           {Treatment: Renamed, Replacement: "COMFYUI_INACTIVITY_TIMEOUT_SECONDS", Note: "a silent ComfyUI socket, converted from ms to seconds", convert: msToSeconds},
	"COMFYUI_EXPOSE_PORTS":                      ignored(noteBuild),
	"COMFYUI_EXPOSED_HOST_PORT_BASE":            ignored(noteBuild),
	"COMFYUI_EXPOSED_CONTAINER_PORT_BASE":       ignored(noteBuild),
	"WORKER_COMFYUI_HOST":                       ignored(noteLocalComfy),
	"WORKER_COMFYUI_PORT":                       ignored(notePerWorker),
	"WORKER_COMFYUI_USERNAME":                   ignored(noteLocalComfy),
	"WORKER_COMFYUI_PASSWORD":                   ignored(noteLocalComfy),
	"WORKER_COMFYUI_TIMEOUT_SECONDS":            ignored("JOB_TIMEOUT_MINUTES limits an attempt"),
	"WORKER_COMFYUI_MAX_CONCURRENT_JOBS":        ignored(noteSlotCount),
	"WORKER_COMFYUI_REMOTE_HOST":                honoured("the server comfyui-remote uses"),
	"WORKER_COMFYUI_REMOTE_PORT":                honoured("the port of WORKER_COMFYUI_REMOTE_HOST"),
	"WORKER_COMFYUI_REMOTE_SECURE":              honoured("https and wss to WORKER_COMFYUI_REMOTE_HOST"),
	"WORKER_COMFYUI_REMOTE_API_KEY":             honoured("a bearer token, never logged"),
	"WORKER_COMFYUI_REMOTE_USERNAME":            refused("basic auth to a remote ComfyUI is not supported; give WORKER_COMFYUI_REMOTE_API_KEY (a bearer token) instead", nil),
	"WORKER_COMFYUI_REMOTE_PASSWORD":            refused("basic auth to a remote ComfyUI is not supported; give WORKER_COMFYUI_REMOTE_API_KEY (a bearer token) instead", nil),
	"WORKER_COMFYUI_REMOTE_TIMEOUT_SECONDS":     ignored("JOB_TIMEOUT_MINUTES limits an attempt"),
	"WORKER_COMFYUI_REMOTE_MAX_CONCURRENT_JOBS": ignored(noteSlotCount),

	// Ollama, A1111, Gemini.
	"OLLAMA_BASE_PORT":              honoured("the daemon's port"),
	"OLLAMA_PORT":                   renamed("OLLAMA_BASE_PORT", "the port the old connector called"),
	"OLLAMA_HOST":                   ignored("the machine runs its daemon on 127.0.0.1:OLLAMA_BASE_PORT and sets OLLAMA_HOST for it"),
	"OLLAMA_DEFAULT_MODEL":          honoured("the model of jobs that name none"),
	"OLLAMA_DEFAULT_MODELS":         honoured("pulled at install, each an install step"),
	"OLLAMA_MODELS":                 honoured("where the daemon keeps its models"),
	"OLLAMA_MODEL_STORAGE_PATH":     renamed("OLLAMA_MODELS", "where the old installer kept the models"),
	"OLLAMA_TIMEOUT_SECONDS":        honoured("one request to the daemon"),
	"OLLAMA_REQUEST_TIMEOUT_MS":     {Treatment: Renamed, Replacement: "OLLAMA_TIMEOUT_SECONDS", Note: "one request to the daemon, converted from ms to seconds", convert: msToSeconds},
	"OLLAMA_RETRY_ATTEMPTS":         ignored(noteRetries),
	"OLLAMA_RETRY_DELAY_SECONDS":    ignored(noteRetries),
	"OLLAMA_MAX_CONCURRENT_JOBS":    ignored(noteSlotCount + "; the daemon serves that many at once (OLLAMA_NUM_PARALLEL)"),
	"A1111_BASE_PORT":               honoured("instance i listens on A1111_BASE_PORT+i"),
	"A1111_PORT":                    renamed("A1111_BASE_PORT", "the port the old connector called"),
	"A1111_HOST":                    ignored("the machine runs A1111 itself on 127.0.0.1:A1111_BASE_PORT+i"),
	"A1111_ARGS":                    honoured("extra arguments of every A1111 instance"),
	"COMFYUI_CHECKPOINTS_PATH":      renamed("A1111_CKPT_DIR", "the checkpoints A1111 loads (--ckpt-dir)"),
	"OLLAMA_MODEL_DOWNLOAD_TIMEOUT": honoured("one model's pull"),
	"OLLAMA_MAX_LOADED_MODELS":      honoured("passed on to the daemon (Ollama's own setting)"),
	"OLLAMA_INSTALL_URL":            honoured("the install script run when OLLAMA_INSTALL=script"),
	"OLLAMA_INSTALL_METHOD":         renamed("OLLAMA_INSTALL", "script lets the machine run the official install script"),
	"OLLAMA_INSTALL_TIMEOUT":        ignored("SERVICE_INSTALL_TIMEOUT limits every install"),
	"OLLAMA_PORT_INCREMENT":         ignored("one Ollama daemon serves every ollama slot; it listens on OLLAMA_BASE_PORT"),
	"OLLAMA_INSTANCES_PER_GPU":      ignored("one Ollama daemon serves every ollama slot and sees every GPU"),
	"OLLAMA_GPU_MEMORY_FRACTION":    ignored("not an Ollama setting; Ollama sizes its GPU memory itself (OLLAMA_MAX_LOADED_MODELS limits the models it keeps)"),
	"A1111_REPO_URL":                honoured("where A1111 comes from"),
	"A1111_BRANCH":                  honoured("the branch of A1111_REPO_URL (empty: its default branch)"),
	"A1111_COMMIT_HASH":             honoured("the pinned commit of A1111_REPO_URL"),
	"A1111_INSTALL_TIMEOUT":         ignored("SERVICE_INSTALL_TIMEOUT limits every install"),
	"A1111_INSTANCES_PER_GPU":       renamed("PM2_INSTANCES_PER_GPU", "A1111 instances on each GPU"),
	"A1111_PORT_INCREMENT":          refused("instances always listen on consecutive ports (A1111_BASE_PORT+i)", notEqual("1")),
	"A1111_MODELS_REPO_URL":         ignored("models are not cloned from a repository; point A1111_CKPT_DIR at the checkpoints (for example ComfyUI's)"),
	"GEMINI_TIMEOUT":                honoured("one request"),
	"GEMINI_MAX_RETRIES":            honoured("retries of one request"),
	"GEMINI_MAX_CONCURRENT_JOBS":    ignored(noteSlotCount + "; GEMINI_RATE_LIMIT caps the requests a second"),
	"COMFYUI_INSTALL_TIMEOUT":       ignored("SERVICE_INSTALL_TIMEOUT limits every install"),
	"COMFYUI_MODELS_PATH":           ignored("models go where COMFYUI_MANIFEST says, inside COMFYUI_DIR"),
	"COMFYUI_ENABLE_CUSTOM_NODES":   ignored("custom nodes are installed when COMFYUI_MANIFEST lists them"),
	"OPENAI_TIMEOUT":                renamed("OPENAI_TIMEOUT_SECONDS", "one request"),
	"OPENAI_MAX_RETRIES":            ignored("requests are retried by the shared client (4 tries with backoff honouring Retry-After), then " + noteRetries),
	"OPENAI_TEXT_MODELS":            ignored("advertise models with WORKER_MODELS, e.g. {\"openai_text\":[\"gpt-4o-mini\"]}"),
	"OPENAI_IMAGE_MODELS":           ignored("advertise models with WORKER_MODELS, e.g. {\"openai_image\":[\"gpt-image-1\"]}"),
	"MOCK_TIMEOUT":                  ignored("JOB_TIMEOUT_MINUTES limits an attempt"),
	"MOCK_MAX_RETRIES":              ignored(noteRetries),
	"MOCK_MAX_CONCURRENT_JOBS":      ignored(noteSlotCount),
	"GEMINI_API_KEY":                honoured("the gemini connector's key; never logged"),
	"GEMINI_NANO_BANANA_URL":        honoured("the generateContent endpoint of gem-nano-banana"),

	// OpenAI.
	"OPENAI_API_KEY":                       honoured("the openai connector's key; never logged"),
	"OPENAI_BASE_URL":                      honoured("where the OpenAI API is"),
	"OPENAI_TEXT_MODEL":                    honoured("the model of openai_text jobs that name none"),
	"OPENAI_IMAGE_MODEL":                   honoured("the model of image jobs that name none"),
	"OPENAI_TIMEOUT_SECONDS":               honoured("one request"),
	"OPENAI_IMG2IMG_MODEL":                 ignored("openai_img2img jobs use OPENAI_IMAGE_MODEL unless their payload names a model"),
	"OPENAI_MAX_TOKENS":                    ignored(notePayload + " (max_tokens)"),
	"OPENAI_TEXT_MAX_TOKENS":               ignored(notePayload + " (max_tokens)"),
	"OPENAI_TEMPERATURE":                   ignored(notePayload + " (temperature)"),
	"OPENAI_TEXT_TEMPERATURE":              ignored(notePayload + " (temperature)"),
	"OPENAI_IMAGE_SIZE":                    ignored(notePayload + " (size)"),
	"OPENAI_IMAGE_QUALITY":                 ignored(notePayload + " (quality)"),
	"OPENAI_RETRY_ATTEMPTS":                ignored("requests are retried by the shared client (4 tries with backoff honouring Retry-After), then " + noteRetries),
	"OPENAI_RETRY_DELAY_SECONDS":           ignored("requests are retried by the shared client (4 tries with backoff honouring Retry-After), then " + noteRetries),
	"OPENAI_HEALTH_CHECK_INTERVAL":         ignored("a circuit breaker stops claiming after repeated failures and tries again 30 s later"),
	"OPENAI_TEXT_MAX_CONCURRENT_JOBS":      ignored(noteSlotCount + "; OPENAI_RATE_LIMIT caps the requests a second"),
	"OPENAI_IMAGE_MAX_CONCURRENT_JOBS":     ignored(noteSlotCount + "; OPENAI_RATE_LIMIT caps the requests a second"),
	"OPENAI_IMG2IMG_MAX_CONCURRENT_JOBS":   ignored(noteSlotCount + "; OPENAI_RATE_LIMIT caps the requests a second"),
	"OPENAI_RESPONSES_MAX_CONCURRENT_JOBS": ignored(noteSlotCount + "; OPENAI_RATE_LIMIT caps the requests a second"),
	"OPENAI_DEBUG":                         ignored("set LOG_LEVEL=debug"),
	"OPENAI_DEBUG_VERBOSE":                 ignored("set LOG_LEVEL=debug"),
	"OPENAI_LOG_LEVEL":                     ignored("set LOG_LEVEL"),

	// Storage.
	"CLOUD_STORAGE_PROVIDER":        refused(noteAzure, func(v string) bool { return strings.EqualFold(strings.TrimSpace(v), "azure") }),
	"CLOUD_PROVIDER":                refused(noteAzure, func(v string) bool { return strings.EqualFold(strings.TrimSpace(v), "azure") }),
	"AZURE_STORAGE_ACCOUNT":         refused(noteAzure, nil),
	"AZURE_STORAGE_KEY":             refused(noteAzure, nil),
	"CLOUD_STORAGE_CONTAINER":       renamed("S3_BUCKET", "the bucket of jobs whose ctx.storage names none"),
	"CLOUD_STORAGE_TEST_CONTAINER":  ignored("the old runtime's storage self-test is gone; a bad S3 setting stops the machine at start"),
	"STORAGE_TEST_MODE":             ignored("the old runtime's storage self-test is gone; a bad S3 setting stops the machine at start"),
	"CLOUD_CDN_URL":                 ignored("result URLs use the job's ctx.storage.cdnUrl, or MACHINE_ASSET_BASE_URL for the local store"),
	"AWS_ACCESS_KEY_ID":             renamed("S3_ACCESS_KEY_ID", "the S3 access key"),
	"AWS_DEFAULT_REGION":            renamed("S3_REGION", "the S3 region"),
	"AWS_SECRET_ACCESS_KEY_ENCODED": ignored("the machine's own uploads use S3_SECRET_ACCESS_KEY (or S3_SECRET_ACCESS_KEY_FILE), the decoded key; ComfyUI custom nodes that read it get it through their env in COMFYUI_MANIFEST"),

	// Simulation.
	"WORKER_SIMULATION_PROCESSING_TIME":           honoured("simulated seconds a job takes"),
	"WORKER_SIMULATION_STEPS":                     honoured("progress steps of a simulated job"),
	"WORKER_SIMULATION_FAILURE_RATE":              honoured("the share of simulated jobs that fail"),
	"WORKER_SIMULATION_PROGRESS_INTERVAL_MS":      ignored("progress follows WORKER_SIMULATION_STEPS over WORKER_SIMULATION_PROCESSING_TIME"),
	"WORKER_SIMULATION_HEALTH_CHECK_FAILURE_RATE": ignored("simulated health checks are gone; the simulation connector has no service to probe"),
	"SIMULATION_PROCESSING_TIME":                  renamed("WORKER_SIMULATION_PROCESSING_TIME", "the simulation service's seconds a job"),
	"SIMULATION_STEPS":                            renamed("WORKER_SIMULATION_STEPS", "the simulation service's progress steps"),
	"SIMULATION_PROGRESS_INTERVAL_MS":             ignored(noteSimService),
	"SIMULATION_WS_PROCESSING_TIME":               ignored(noteSimService),
	"SIMULATION_WS_STEPS":                         ignored(noteSimService),
	"SIMULATION_WS_PROGRESS_INTERVAL_MS":          ignored(noteSimService),
	"SIMULATION_WEBSOCKET_URL":                    ignored(noteSimService),
	"SIMULATION_HOST":                             ignored(noteSimService),
	"SIMULATION_PORT":                             ignored(noteSimService),
	"SIMULATION_MAX_CONCURRENT_JOBS":              ignored(noteSlotCount),
	"SIMULATION_BASE_PORT":                        ignored(noteSimService),
	"SIMULATION_PORT_INCREMENT":                   ignored(noteSimService),
	"SIMULATION_INSTANCES_PER_MACHINE":            ignored(noteSimService),
	"SIMULATION_CAPABILITIES":                     ignored(noteSimService),
	"SIMULATION_DATA_PATH":                        ignored(noteSimService),
	"SIMULATION_TEST_MODE":                        ignored(noteSimService),
	"SIMULATION_WS_BASE_PORT":                     ignored(noteSimService),
	"SIMULATION_WS_PORT_INCREMENT":                ignored(noteSimService),
	"SIMULATION_WS_INSTANCES_PER_MACHINE":         ignored(noteSimService),
	"SIMULATION_WS_CAPABILITIES":                  ignored(noteSimService),
	"SIMULATION_WS_DATA_PATH":                     ignored(noteSimService),
	"SIMULATION_WS_TEST_MODE":                     ignored(noteSimService),
	"MOCK_MODE":                                   refused("the old worker replaced its connectors with mocks; run the mock or simulation connector instead (WORKER_CONNECTORS=mock)", notEqual("false")),

	// Generic REST connectors and per-service processes of the old runtime.
	"SERVICE_BASE_URL":              ignored(noteRESTGen),
	"SERVICE_TIMEOUT_SECONDS":       ignored(noteRESTGen),
	"SERVICE_RETRY_ATTEMPTS":        ignored(noteRESTGen),
	"SERVICE_RETRY_DELAY_SECONDS":   ignored(noteRESTGen),
	"SERVICE_MAX_CONCURRENT_JOBS":   ignored(noteRESTGen),
	"SERVICE_HEALTH_CHECK_INTERVAL": ignored(noteRESTGen),
	"SERVICE_NAME":                  ignored(notePerWorker),
	"SERVICE_TYPE":                  ignored(notePerWorker),
	"SERVICE_VERSION":               ignored(noteBuild),

	// Health checks, dashboards, other parties.
	"HEALTH_CHECK_INTERVAL":        ignored(noteHealth),
	"HEALTH_CHECK_INTERVAL_MS":     ignored(noteHealth),
	"HEALTH_CHECK_TIMEOUT":         ignored(noteHealth),
	"WORKER_HEALTH_CHECK_INTERVAL": ignored(noteHealth),
	"JOB_PROGRESS_TIMEOUT_SEC":     ignored(noteHealth),
	"WORKER_HEARTBEAT_TIMEOUT_SEC": ignored("read by the API, not by machines; a slot's heartbeat key expires after 60 s"),
	"WORKER_DASHBOARD_ENABLED":     ignored("the console (`machine console`) and GET /status replace the worker dashboard"),
	"WORKER_DASHBOARD_PORT":        ignored("the console (`machine console`) and GET /status replace the worker dashboard"),
	"WEBHOOK_SERVICE_URL":          ignored(noteAPIOnly),
	"EMP_API_URL":                  ignored(noteAPIOnly),
	"AUTH_TOKEN":                   ignored(noteAPIOnly + "; MACHINE_API_TOKEN guards the machine's own mutating routes"),
	"WORKER_WEBSOCKET_AUTH_TOKEN":  ignored(noteAPIOnly),
	"REDIS_DUAL_WRITE_STEPS":       ignored("an API-side flag; the machine writes the job hash and the pub/sub messages as PROTOCOL.md says"),

	// The old image: bundle, paths, build, deployment, telemetry, logs.
	"WORKER_BUNDLE_MODE":                  ignored(noteBundle),
	"WORKER_BUNDLE_TARGET":                ignored(noteBundle),
	"WORKER_DOWNLOAD_URL":                 ignored(noteBundle),
	"WORKER_LOCAL_PATH":                   ignored(noteBundle),
	"WORKSPACE_PATH":                      renamed("MACHINE_WORKSPACE", "the workspace (/workspace in the old image)"),
	"WORKSPACE_DIR":                       renamed("MACHINE_WORKSPACE", "the workspace (/workspace in the old image)"),
	"LOG_DIR":                             renamed("MACHINE_LOG_DIR", "where service logs go"),
	"ROOT_DIR":                            ignored(notePaths),
	"SERVICE_DIR":                         ignored(notePaths),
	"SERVICE_MANAGER_PATH":                ignored(notePaths),
	"MACHINE_DIR":                         ignored(notePaths),
	"NODE_ENV":                            ignored("there is no Node.js runtime; LOG_LEVEL sets the logging"),
	"NODE_PID":                            ignored("there is no Node.js runtime"),
	"NODE_VERSION":                        ignored(noteBuild),
	"VERSION":                             ignored(noteBuild),
	"MACHINE_VERSION":                     ignored(noteBuild),
	"BUILD_DATE":                          ignored(noteBuild),
	"BUILD_ENV":                           ignored(noteBuild),
	"BUILD_TIMESTAMP":                     ignored(noteBuild),
	"BUILD_VERSION":                       ignored(noteBuild),
	"FILE_VERSION":                        ignored(noteBuild),
	"GIT_BRANCH":                          ignored(noteBuild),
	"GIT_COMMIT":                          ignored(noteBuild),
	"IMAGE_NAME":                          ignored(noteBuild),
	"LOCAL_IMAGE_NAME":                    ignored(noteBuild),
	"PUSH_IMAGE_NAME":                     ignored(noteBuild),
	"COMPOSE_PROFILES":                    ignored(noteBuild),
	"PROFILE":                             ignored(noteBuild),
	"CURRENT_ENV":                         ignored(noteBuild),
	"ENV":                                 ignored(noteBuild),
	"DEPLOYMENT_PLATFORM":                 ignored(noteBuild),
	"INSTANCE_TYPE":                       ignored(noteBuild),
	"CONTAINER_START_TIME":                ignored(noteBuild),
	"RAILWAY_ENVIRONMENT":                 ignored(noteBuild),
	"RAILWAY_REGION":                      ignored(noteBuild),
	"RAILWAY_SERVICE_INSTANCE_ID":         ignored(noteBuild),
	"EXPOSE_PORTS":                        ignored(noteBuild),
	"RUNTIME_PORTS":                       ignored(noteBuild),
	"NGINX_PORT":                          ignored(noteBuild),
	"HOST":                                ignored(noteBuild),
	"PORT":                                ignored("the supervisor sets PORT for each service it runs; the machine's own port is MACHINE_HEALTH_PORT"),
	"EMP_ENV_DECRYPT_KEY":                 ignored("encrypted env files are gone; give secrets as variables or as files (KEY_FILE)"),
	"DISABLE_ENV_ENCRYPTION":              ignored("encrypted env files are gone; give secrets as variables or as files (KEY_FILE)"),
	"OTEL_ENABLED":                        ignored(noteTelemetry),
	"OTEL_VERSION":                        ignored(noteTelemetry),
	"OTEL_COLLECTOR_ENDPOINT":             ignored(noteTelemetry),
	"OTEL_COLLECTOR_METRICS_ENDPOINT":     ignored(noteTelemetry),
	"OTEL_COLLECTOR_TRACES_ENDPOINT":      ignored(noteTelemetry),
	"OTEL_EXPORTER_OTLP_HEADERS":          ignored(noteTelemetry),
	"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": ignored(noteTelemetry),
	"DASH0_DATASET":                       ignored(noteTelemetry),
	"DISABLE_TELEMETRY_LOGGING":           ignored(noteTelemetry),
	"DASH0_AUTH_TOKEN":                    ignored(noteTelemetry),
	"DASH0_ENDPOINT":                      ignored(noteTelemetry),
	"DASH0_LOGS_ENDPOINT":                 ignored(noteTelemetry),
	"DASH0_METRICS_ENDPOINT":              ignored(noteTelemetry),
	"DASH0_TRACES_ENDPOINT":               ignored(noteTelemetry),
	"TELEMETRY_LOGS":                      ignored(noteTelemetry),
	"OTEL_SERVICE_NAME":                   ignored(noteTelemetry),
	"OTEL_SERVICE_VERSION":                ignored(noteTelemetry),
	"EMPROPS_API_AUTH":                    ignored(noteComponents),
	"ENV_ENCRYPT_KEY":                     ignored("encrypted env files are gone; give secrets as variables or as files (KEY_FILE)"),
	"NGROK_AUTH_TOKEN":                    ignored(noteBuild),
	"NGROK_API_KEY":                       ignored(noteBuild),
	"LOGGING_ENABLED":                     ignored(noteLogging),
	"LOG_TO_FILE":                         ignored(noteLogging),
	"LOG_FORMAT":                          ignored(noteLogging),
	"LOG_MAX_SIZE":                        ignored(noteLogging),
	"LOG_MAX_FILES":                       ignored(noteLogging),
	"DISABLE_FILE_LOGGING":                ignored(noteLogging),
	"CUSTOM_LOG_FILES":                    ignored(noteLogging),
	"EMPROPS_DEBUG_LOGGING":               ignored("set LOG_LEVEL=debug"),
	"DEBUG_MODE":                          ignored("set LOG_LEVEL=debug"),
}

func init() {
	// The generic REST connectors' settings, WORKER_REST_SYNC_* and WORKER_REST_ASYNC_*.
	for _, kind := range []string{"SYNC", "ASYNC"} {
		for _, k := range []string{"BASE_URL", "HEALTH_URL", "MAX_CONCURRENT_JOBS", "METHOD", "RESPONSE_FORMAT", "RETRY_ATTEMPTS",
			"RETRY_DELAY_SECONDS", "TIMEOUT_SECONDS", "COMPLETION_ENDPOINT", "POLLING_INTERVAL_MS", "RESULT_FIELD", "STATUS_FIELD"} {
			oldVariables["WORKER_REST_"+kind+"_"+k] = ignored(noteRESTGen)
		}
	}
}

// OldVariables returns every variable of the old runtime with its treatment, sorted by name.
func OldVariables() []OldVariable {
	out := make([]OldVariable, 0, len(oldVariables))
	for name, v := range oldVariables {
		v.Name = name
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b OldVariable) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// LookupOld returns the treatment of one old variable.
func LookupOld(name string) (OldVariable, bool) {
	v, ok := oldVariables[name]
	v.Name = name
	return v, ok
}

// renamedTo lists, for each new variable, the old names read in its place, sorted.
var renamedTo = func() map[string][]string {
	m := map[string][]string{}
	for name, v := range oldVariables {
		if v.Treatment == Renamed {
			m[v.Replacement] = append(m[v.Replacement], name)
		}
	}
	for _, names := range m {
		slices.Sort(names)
	}
	return m
}()

// withOldNames reads a new variable under its old names when it is unset itself.
func withOldNames(env Lookup) Lookup {
	return func(key string) (string, bool) {
		if v, ok := env(key); ok && strings.TrimSpace(v) != "" {
			return v, ok
		}
		for _, old := range renamedTo[key] {
			if v, ok := oldValue(env, old); ok {
				return v, true
			}
		}
		return env(key)
	}
}

// OldValue is the value of the new variable an old renamed one stands for, when it applies
// (NUM_GPUS only with GPU_MODE=mock) and its value converts (milliseconds to seconds).
func OldValue(env Lookup, name string) (string, bool) { return oldValue(env, name) }

func oldValue(env Lookup, name string) (string, bool) {
	ov := oldVariables[name]
	v, ok := env(name)
	if !ok || strings.TrimSpace(v) == "" || (ov.when != nil && !ov.when(env)) {
		return "", false
	}
	if ov.convert != nil {
		return ov.convert(strings.TrimSpace(v))
	}
	return strings.TrimSpace(v), true
}

// legacy notes every old variable set in the environment, refuses the values the machine
// cannot honour, reports old and new names that disagree, and advertises the old worker's
// capability variables.
func (r *reader) legacy(raw Lookup, c *Config) {
	for _, v := range OldVariables() {
		if v.caps != nil { // read under its old names too (WORKER_DEBUGGING_ENABLED → DEBUGGING_ENABLED)
			if s := r.str(v.Name, ""); s != "" {
				if key, val := v.caps(s); val != nil {
					c.addCapability(key, val)
				}
			}
		}
		value, ok := raw(v.Name)
		value = strings.TrimSpace(value)
		if !ok || value == "" {
			continue
		}
		note, noted := v.NoteFor(value, raw)
		if !noted {
			continue
		}
		c.Legacy = append(c.Legacy, note)
		switch note.Treatment {
		case Refused:
			r.problem("%s", note.Sentence)
		case Renamed:
			if nv, set := raw(v.Replacement); set && strings.TrimSpace(nv) != "" {
				if conv, _ := oldValue(raw, v.Name); conv != strings.TrimSpace(nv) {
					r.problem("%s and %s disagree; %s is the old name of %s, so set only %s", v.Name, v.Replacement, v.Name, v.Replacement, v.Replacement)
				}
			} else if _, ok := oldValue(raw, v.Name); !ok {
				r.problem("%s=%q is not valid; set %s instead (%s)", v.Name, value, v.Replacement, v.Note)
			}
		}
	}
	if region := r.str("WORKER_REGION", ""); region != "" {
		loc := map[string]any{"region": region, "compliance_zones": parseList(r.str("WORKER_COMPLIANCE", ""))}
		if loc["compliance_zones"] == nil {
			loc["compliance_zones"] = []string{}
		}
		if s := r.str("WORKER_COUNTRY", ""); s != "" {
			loc["country"] = s
		}
		if s := r.str("WORKER_DATA_RESIDENCY", ""); s != "" {
			loc["data_residency_requirements"] = parseList(s)
		}
		c.addCapability("location", loc)
	}
	if tier := r.str("WORKER_COST_TIER", ""); tier != "" {
		cost := map[string]any{"tier": tier}
		for key, name := range map[string]string{"rate_per_hour": "WORKER_RATE_PER_HOUR", "rate_per_job": "WORKER_RATE_PER_JOB", "minimum_charge": "WORKER_MINIMUM_CHARGE"} {
			if s := r.str(name, ""); s != "" {
				cost[key] = r.float(name, 0, "a number such as 0.5")
			}
		}
		c.addCapability("cost", cost)
	}
}

// addCapability advertises an old worker's capability key, unless WORKER_CAPABILITIES has it.
func (c *Config) addCapability(key string, v any) {
	if _, taken := c.CustomCapabilities[key]; taken {
		return
	}
	if c.CustomCapabilities == nil {
		c.CustomCapabilities = map[string]any{}
	}
	c.CustomCapabilities[key] = v
}
