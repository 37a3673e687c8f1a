// Package metrics holds the machine's Prometheus collectors, on a registry of its own so that
// tests and several machines in one process never collide.
package metrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/emp-job-queue/machine/gpu"
)

// Metrics are the machine's collectors.
type Metrics struct {
	Registry    *prometheus.Registry
	Jobs        *prometheus.CounterVec   // by connector and outcome
	JobDuration *prometheus.HistogramVec // by connector
	ClaimTime   prometheus.Histogram
	SlotsBusy   *prometheus.GaugeVec // by connector
	BrokerUp    prometheus.Gauge
	// ClaimErrors counts failed claims by kind: script (the broker answers but the claim fails
	// inside Redis) or broker (no answer). ClaimFailing counts slots whose claims keep failing.
	ClaimErrors  *prometheus.CounterVec
	ClaimFailing prometheus.Gauge
	// AutoscaleDecisions counts the autoscaler's decisions by connector and kind (enable,
	// resize, disable), applied or refused.
	AutoscaleDecisions *prometheus.CounterVec
	// ConnectorThrottled counts the 429s remote API connectors got; ConnectorBreakerOpen is 1
	// while a connector's circuit breaker is open, 0.5 half-open, 0 closed.
	ConnectorThrottled   *prometheus.CounterVec
	ConnectorBreakerOpen *prometheus.GaugeVec

	gpu     map[string]*prometheus.GaugeVec // by gpu index and model
	host    *prometheus.GaugeVec            // by resource
	service *prometheus.GaugeVec            // by service and resource

	resources *jobResources // per-job resource records (resources.go)
}

// gpuGauges are the per-GPU gauges, by the name of the reading.
var gpuGauges = []struct{ name, help string }{
	{"machine_gpu_utilization_percent", "GPU utilization (n/a under MIG: absent)."},
	{"machine_gpu_memory_used_bytes", "GPU memory in use."},
	{"machine_gpu_memory_total_bytes", "GPU memory in all."},
	{"machine_gpu_temperature_celsius", "GPU temperature."},
	{"machine_gpu_power_watts", "GPU power draw."},
	{"machine_gpu_power_limit_watts", "GPU enforced power limit."},
	{"machine_gpu_healthy", "1 while the GPU is in service, 0 after an XID or uncorrectable ECC error."},
}

// New registers the collectors on a fresh registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "machine_jobs_total", Help: "Job attempts that ended, by connector and outcome (completed, retried, failed, released).",
		}, []string{"connector", "outcome"}),
		JobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "machine_job_duration_seconds", Help: "Time from claim to the end of an attempt.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12),
		}, []string{"connector"}),
		ClaimTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "machine_claim_duration_seconds", Help: "Time one claim script took, matched or not.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 3, 10),
		}),
		SlotsBusy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "machine_slots_busy", Help: "Worker slots running a job, by connector.",
		}, []string{"connector"}),
		BrokerUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "machine_broker_up", Help: "1 when the broker answers, else 0.",
		}),
		ClaimErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "machine_claim_errors_total", Help: "Failed claims, by kind: script (the claim fails inside Redis) or broker (no answer).",
		}, []string{"kind"}),
		ClaimFailing: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "machine_claim_failing_slots", Help: "Slots whose last 3 or more claims failed; /ready says not ready while any does.",
		}),
		AutoscaleDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "machine_autoscale_decisions_total", Help: "Autoscaler decisions, by connector and kind (enable, resize, disable).",
		}, []string{"connector", "kind"}),
		ConnectorThrottled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "machine_connector_throttled_total", Help: "429 (rate limited) answers remote API connectors got, by connector.",
		}, []string{"connector"}),
		ConnectorBreakerOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "machine_connector_breaker_open", Help: "1 while a remote API connector's circuit breaker is open (its jobs are not claimed), 0.5 half-open, 0 closed.",
		}, []string{"connector"}),
	}
	m.gpu = map[string]*prometheus.GaugeVec{}
	for _, g := range gpuGauges {
		m.gpu[g.name] = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: g.name, Help: g.help}, []string{"gpu", "model"})
		m.Registry.MustRegister(m.gpu[g.name])
	}
	m.host = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "machine_host", Help: "Host load: cpu_percent, memory_used_bytes, memory_total_bytes, disk_used_bytes, disk_total_bytes.",
	}, []string{"resource"})
	m.service = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "machine_service", Help: "Supervised service load: rss_bytes, cpu_percent.",
	}, []string{"service", "resource"})
	m.Registry.MustRegister(m.host, m.service)
	m.resources = newJobResources(m.Registry)
	m.Registry.MustRegister(m.Jobs, m.JobDuration, m.ClaimTime, m.SlotsBusy, m.BrokerUp, m.ClaimErrors, m.ClaimFailing, m.AutoscaleDecisions,
		m.ConnectorThrottled, m.ConnectorBreakerOpen,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveTelemetry sets the GPU, host and service gauges from a sample. Readings that are n/a
// are left out rather than reported as numbers.
func (m *Metrics) ObserveTelemetry(t gpu.Snapshot) {
	const mb = 1 << 20
	for _, r := range t.GPUs {
		labels := prometheus.Labels{"gpu": strconv.Itoa(r.Index), "model": r.Name}
		healthy := 1.0
		if _, bad := t.Unhealthy[r.Index]; bad {
			healthy = 0
		}
		for name, v := range map[string]float64{
			"machine_gpu_utilization_percent": r.UtilGPU, "machine_gpu_memory_used_bytes": r.MemoryUsedMB * mb,
			"machine_gpu_memory_total_bytes": r.MemoryTotalMB * mb, "machine_gpu_temperature_celsius": r.TemperatureC,
			"machine_gpu_power_watts": r.PowerW, "machine_gpu_power_limit_watts": r.PowerLimitW, "machine_gpu_healthy": healthy,
		} {
			if gpu.IsNA(v) {
				m.gpu[name].Delete(labels)
				continue
			}
			m.gpu[name].With(labels).Set(v)
		}
	}
	h := t.Host
	for res, v := range map[string]float64{"cpu_percent": h.CPUPercent, "memory_used_bytes": h.MemUsedMB * mb,
		"memory_total_bytes": h.MemTotalMB * mb, "disk_used_bytes": h.DiskUsedGB * 1024 * mb, "disk_total_bytes": h.DiskTotalGB * 1024 * mb} {
		if !gpu.IsNA(v) {
			m.host.WithLabelValues(res).Set(v)
		}
	}
	m.service.Reset()
	for _, s := range t.Services {
		if !gpu.IsNA(s.RSSMB) {
			m.service.WithLabelValues(s.Name, "rss_bytes").Set(s.RSSMB * mb)
		}
		if !gpu.IsNA(s.CPUPercent) {
			m.service.WithLabelValues(s.Name, "cpu_percent").Set(s.CPUPercent)
		}
	}
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
