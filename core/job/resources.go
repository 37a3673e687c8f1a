package job

import (
	"context"
	"sync"
)

// Resources is what one job attempt cost, from its claim to its final write. It is added to a
// completed job's result as metadata.resources (PROTOCOL §3: additive; nothing else in the result
// changes). A figure the machine could not measure is absent, never zero or made up.
type Resources struct {
	// Wall time: queue wait (created_at → claim), then preparation (a model download or load,
	// a service start the job waited for), run and upload (storing output files). Prepare, run
	// and upload add up to the time from claim to the final write.
	QueueWaitMS *int64 `json:"queue_wait_ms,omitempty"` // absent when created_at is missing or unreadable
	PrepareMS   int64  `json:"prepare_ms"`
	RunMS       int64  `json:"run_ms"`
	UploadMS    int64  `json:"upload_ms"`

	// GPU figures, present when the job's slot is bound to a GPU. A GPU that ran several jobs at
	// once shares its time and energy equally between them.
	GPUSeconds      *float64 `json:"gpu_seconds,omitempty"`
	GPUEnergyWh     *float64 `json:"gpu_energy_wh,omitempty"`
	GPUEnergySource string   `json:"gpu_energy_source"` // counter, integrated or none
	GPUPeakMemoryMB *float64 `json:"gpu_peak_memory_mb,omitempty"`
	GPUMemoryShared *bool    `json:"gpu_memory_shared,omitempty"` // another job ran on the same GPU meanwhile

	// The supervised service the job ran on, with its child processes.
	CPUSeconds *float64 `json:"cpu_seconds,omitempty"`
	PeakRSSMB  *float64 `json:"peak_rss_mb,omitempty"`

	// APIUsage is what a remote API reported (OpenAI usage tokens, Replicate predict_time,
	// RunPod executionTime), for API connectors only.
	APIUsage map[string]any `json:"api_usage,omitempty"`

	// CostUSD is priced from MACHINE_GPU_HOUR_PRICE and MACHINE_KWH_PRICE when they are set and
	// every figure they price was measured.
	CostUSD *float64 `json:"cost_usd,omitempty"`
}

// Energy sources of Resources.GPUEnergySource.
const (
	EnergyCounter    = "counter"    // the GPU's total-energy counter (NVML)
	EnergyIntegrated = "integrated" // power readings integrated over the samples
	EnergyNone       = "none"       // no GPU, or no energy or power reading
)

// Phase is a part of a job attempt that its resource record times apart from the run.
type Phase int

const (
	// PhasePrepare is waiting for something the job needs before it can run: a model download
	// or load, a service start.
	PhasePrepare Phase = iota + 1
	// PhaseUpload is storing the job's output files.
	PhaseUpload
)

// PhaseTimer receives the phases of one job attempt (core/accounting implements it).
type PhaseTimer interface {
	// BeginPhase starts a phase; end stops it.
	BeginPhase(p Phase) (end func())
}

type phaseKey struct{}

// WithPhaseTimer returns a context that carries a job attempt's phase timer to its connector.
func WithPhaseTimer(ctx context.Context, t PhaseTimer) context.Context {
	return context.WithValue(ctx, phaseKey{}, t)
}

// Mark starts timing a phase of the job ctx belongs to; call end when the phase is over (more
// than once is harmless). Without a timer in ctx it does nothing, so connectors call it freely:
//
//	end := job.Mark(ctx, job.PhaseUpload)
//	saved, err := store.Save(…)
//	end()
func Mark(ctx context.Context, p Phase) (end func()) {
	t, _ := ctx.Value(phaseKey{}).(PhaseTimer)
	if t == nil {
		return func() {}
	}
	return sync.OnceFunc(t.BeginPhase(p))
}
