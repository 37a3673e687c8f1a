package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/emp-job-queue/machine/core/job"
)

// jobResources are the collectors of the per-job resource records (core/accounting), by the
// job's service (service_required).
type jobResources struct {
	gpuSeconds *prometheus.CounterVec
	energyWh   *prometheus.CounterVec
	runTime    *prometheus.HistogramVec
	energy     *prometheus.HistogramVec
}

func newJobResources(reg *prometheus.Registry) *jobResources {
	r := &jobResources{
		gpuSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "machine_job_gpu_seconds_total", Help: "GPU-seconds jobs held, by service (a GPU shared by jobs is split between them).",
		}, []string{"service"}),
		energyWh: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "machine_job_gpu_energy_wh_total", Help: "GPU energy jobs used in watt-hours, by service (jobs whose energy was measured).",
		}, []string{"service"}),
		runTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "machine_job_run_seconds", Help: "Run time of one job attempt, without its preparation and upload, by service.",
			Buckets: prometheus.ExponentialBuckets(0.01, 3, 12),
		}, []string{"service"}),
		energy: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "machine_job_gpu_energy_wh", Help: "GPU energy of one job attempt in watt-hours, by service (measured jobs only).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 3, 12),
		}, []string{"service"}),
	}
	reg.MustRegister(r.gpuSeconds, r.energyWh, r.runTime, r.energy)
	return r
}

// ObserveJobResources counts one job attempt's resource record. Figures the record lacks are
// left out, not counted as zero.
func (m *Metrics) ObserveJobResources(service string, r job.Resources) {
	m.resources.runTime.WithLabelValues(service).Observe(float64(r.RunMS) / 1000)
	if r.GPUSeconds != nil {
		m.resources.gpuSeconds.WithLabelValues(service).Add(*r.GPUSeconds)
	}
	if r.GPUEnergyWh != nil {
		m.resources.energyWh.WithLabelValues(service).Add(*r.GPUEnergyWh)
		m.resources.energy.WithLabelValues(service).Observe(*r.GPUEnergyWh)
	}
}
