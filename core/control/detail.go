package control

// This file holds what the console's graphs and describe views need beyond the rows of the
// main screen. Every history is oldest first, one value per telemetry sample (Trends.StepMS
// apart); n/a readings are -1, so the JSON stays NaN-free.

// Host is the host's load.
type Host struct {
	CPUPercent  *float64 `json:"cpu_percent"`
	Cores       int      `json:"cores"`
	MemUsedMB   *float64 `json:"mem_used_mb"`
	MemTotalMB  *float64 `json:"mem_total_mb"`
	DiskPath    string   `json:"disk_path,omitempty"`
	DiskUsedGB  *float64 `json:"disk_used_gb"`
	DiskTotalGB *float64 `json:"disk_total_gb"`
}

// Trends are the machine-wide histories.
type Trends struct {
	StepMS     int64  `json:"step_ms"`
	QueueDepth Series `json:"queue_depth"`
	JobsPerMin Series `json:"jobs_per_min"`
	HostCPU    Series `json:"host_cpu"`
}

// GPUDetail is every reading of a GPU beyond the main row, and its history.
type GPUDetail struct {
	UUID         string       `json:"uuid,omitempty"`
	UtilMemory   *float64     `json:"util_memory"`
	FanPct       *float64     `json:"fan_pct"`
	SMClockMHz   *float64     `json:"sm_clock_mhz"`
	MemClockMHz  *float64     `json:"mem_clock_mhz"`
	PState       *float64     `json:"pstate"`
	EncoderUtil  *float64     `json:"encoder_util"`
	DecoderUtil  *float64     `json:"decoder_util"`
	Processes    []GPUProcess `json:"processes"`
	MemHistory   Series       `json:"mem_history"`   // MB used
	TempHistory  Series       `json:"temp_history"`  // °C
	PowerHistory Series       `json:"power_history"` // W
}

// GPUProcess is a process holding memory on a GPU (host PID).
type GPUProcess struct {
	PID      uint32  `json:"pid"`
	MemoryMB float64 `json:"memory_mb"`
}

// ServiceDetail is a service's command, probe, exits and load.
type ServiceDetail struct {
	Command    []string `json:"command"`
	GPU        int      `json:"gpu"` // -1 when not bound
	Adopted    bool     `json:"adopted"`
	Probe      string   `json:"probe"`
	LastExit   string   `json:"last_exit,omitempty"`
	Exits      []Exit   `json:"exits"` // newest last
	CPUPercent *float64 `json:"cpu_percent"`
	RSSMB      *float64 `json:"rss_mb"`
	CPUHistory Series   `json:"cpu_history"`
	RSSHistory Series   `json:"rss_history"`
}

// Exit is one end of a service's process.
type Exit struct {
	AtMS   int64  `json:"at_ms"` // Unix ms
	Reason string `json:"reason"`
}

// JobDetail is what a job's describe view shows beyond its row.
type JobDetail struct {
	Customer     string  `json:"customer,omitempty"`
	Priority     string  `json:"priority,omitempty"`
	Requirements string  `json:"requirements,omitempty"`
	Workflow     string  `json:"workflow,omitempty"`
	CreatedMS    int64   `json:"created_ms,omitempty"` // Unix ms, as the API wrote it
	StartedMS    int64   `json:"started_ms,omitempty"` // Unix ms, when this machine claimed it
	Attempt      int     `json:"attempt,omitempty"`
	MaxRetries   int     `json:"max_retries,omitempty"`
	Payload      []Field `json:"payload"` // summary: secrets cut, long values shortened
	Steps        []Step  `json:"steps"`   // progress reports, oldest first
	// Resources is the job result's metadata.resources (GPU seconds, peak memory, …) when the
	// machine records it; the describe view lists whatever keys it holds.
	Resources map[string]any `json:"resources,omitempty"`
}

// Field is one summarized payload field.
type Field struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Step is one progress report.
type Step struct {
	AtMS    int64   `json:"at_ms"`
	Percent float64 `json:"percent"`
	Message string  `json:"message,omitempty"`
}

// Slot is one worker slot.
type Slot struct {
	ID        string `json:"id"`
	Connector string `json:"connector"`
	GPU       int    `json:"gpu"`
	Status    string `json:"status"`
	JobID     string `json:"job_id,omitempty"`
	Completed uint64 `json:"completed"`
	Failed    uint64 `json:"failed"`
	LastError string `json:"last_error,omitempty"`
	IdleMS    int64  `json:"idle_ms"` // since its last activity
}

// Throttle is a remote API connector's rate-limit and breaker state and its last errors.
type Throttle struct {
	Throttled        bool       `json:"throttled"`     // a 429 in the last minute or a breaker not closed
	Why              string     `json:"why,omitempty"` // e.g. "3 × 429 in the last minute", "breaker open"
	RateLimited1m    int        `json:"rate_limited_1m"`
	RateLimitedTotal uint64     `json:"rate_limited_total"`
	RetryAfterMS     int64      `json:"retry_after_ms"`    // what the last 429 asked for (0: nothing)
	RetryAfterAtMS   int64      `json:"retry_after_at_ms"` // Unix ms of the last 429; 0: none yet
	Breaker          string     `json:"breaker"`           // closed, half-open, open
	BreakerSinceMS   int64      `json:"breaker_since_ms"`  // Unix ms
	Errors           []APIError `json:"errors"`            // failed requests, oldest first
}

// APIError is one failed request to a remote API, its secrets cut.
type APIError struct {
	AtMS int64  `json:"at_ms"` // Unix ms
	Text string `json:"text"`
}
