package state

import "time"

// Service is a supervised service as readers see it. The supervisor reports it; the store
// keeps its own copy so readers need not know the supervisor.
type Service struct {
	Name      string
	State     string // the supervisor's word: stopped, starting, ready, backoff, errored
	Ready     bool   // its probe answers: slots bound to it claim
	Errored   bool   // crash loop, or it cannot start; waits for the operator
	PM2Status string // the state in the old runtime's words (online, launching, errored, stopped)
	PID       int
	Restarts  int
	StartedAt time.Time
	Port      int
	GPU       int
	Adopted   bool   // re-attached after a machine restart
	LastExit  string // how the last run ended
	Error     string // why it is errored or not ready
	RSSMB     float64
	Command   []string // what it runs
	Probe     string   // how its readiness is checked
	Exits     []Exit   // its recent exits, newest last
}

// Exit is one end of a service's run and why.
type Exit struct {
	At     time.Time
	Reason string
}

// Telemetry is the GPU sampler's latest sample. A reading a device cannot give is NaN.
type Telemetry struct {
	At        time.Time
	GPUs      []GPU
	Unhealthy map[int]string // GPU index → why it is out of service
	Host      Host
	Services  []ServiceLoad // per supervised service
}

// ServiceLoad is one supervised service's CPU and memory, with its children.
type ServiceLoad struct {
	Name       string
	CPUPercent float64 // % of one core
	RSSMB      float64
}

// GPU is one GPU's latest readings.
type GPU struct {
	Index         int
	UUID          string
	Name          string
	MIG           bool // MIG mode: per-GPU utilization is n/a
	UtilGPU       float64
	UtilMemory    float64
	MemoryUsedMB  float64
	MemoryTotalMB float64
	TemperatureC  float64
	PowerW        float64
	PowerLimitW   float64
	FanPct        float64
	SMClockMHz    float64
	MemClockMHz   float64
	PState        float64
	EncoderUtil   float64
	DecoderUtil   float64
	EnergyMJ      float64 // total-energy counter since the driver loaded; NaN where the GPU has none
	Processes     []GPUProcess
}

// GPUProcess is a process using a GPU's memory.
type GPUProcess struct {
	PID      uint32
	MemoryMB float64
}

// Host is the machine's own load.
type Host struct {
	CPUPercent  float64
	CPUCores    int
	MemUsedMB   float64
	MemTotalMB  float64
	DiskPath    string
	DiskUsedGB  float64
	DiskTotalGB float64
}
