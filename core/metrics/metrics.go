// Package metrics holds the machine's Prometheus collectors, on a registry of its own so that
// tests and several machines in one process never collide.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the machine's collectors.
type Metrics struct {
	Registry    *prometheus.Registry
	Jobs        *prometheus.CounterVec   // by connector and outcome
	JobDuration *prometheus.HistogramVec // by connector
	ClaimTime   prometheus.Histogram
	SlotsBusy   *prometheus.GaugeVec // by connector
	BrokerUp    prometheus.Gauge
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
	}
	m.Registry.MustRegister(m.Jobs, m.JobDuration, m.ClaimTime, m.SlotsBusy, m.BrokerUp,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
