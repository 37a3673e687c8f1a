package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/core/supervisor"
)

var (
	queueDepthDesc = prometheus.NewDesc("machine_queue_depth",
		"Pending jobs for the services this machine serves (counted every 10 s).", nil, nil)
	slotsDesc = prometheus.NewDesc("machine_slots",
		"Worker slots, by connector and status (idle, busy, offline).", []string{"connector", "status"}, nil)
	pausedDesc = prometheus.NewDesc("machine_paused",
		"1 while the operator has drained the machine: its slots claim nothing.", nil, nil)
	serviceStateDesc = prometheus.NewDesc("machine_service_state",
		"1 for the state each supervised service is in, 0 for the others.", []string{"service", "state"}, nil)
	serviceRestartsDesc = prometheus.NewDesc("machine_service_restarts_total",
		"Restarts of each supervised service since the machine started.", []string{"service"}, nil)
)

// The model cache's figures, exported only while there is one (MACHINE_MODEL_CACHE_GB > 0).
var (
	modelCacheBytesDesc = prometheus.NewDesc("machine_model_cache_bytes",
		"Model cache disk: used (on disk or reserved by downloads under way) and budget bytes.", []string{"kind"}, nil)
	modelCacheModelsDesc = prometheus.NewDesc("machine_model_cache_models",
		"Models in the model cache, by state: on_disk, downloading.", []string{"state"}, nil)
	modelCacheLookupsDesc = prometheus.NewDesc("machine_model_cache_lookups_total",
		"Jobs' model lookups, by result: hit (on disk) or miss (downloaded first).", []string{"result"}, nil)
	modelCacheDownloadsDesc = prometheus.NewDesc("machine_model_cache_downloads_total",
		"Models the cache downloaded (for jobs and prefetch).", nil, nil)
	modelCacheDownloadedDesc = prometheus.NewDesc("machine_model_cache_downloaded_bytes_total",
		"Bytes of the models the cache downloaded.", nil, nil)
	modelCacheEvictionsDesc = prometheus.NewDesc("machine_model_cache_evictions_total",
		"Models evicted from the cache to make room.", nil, nil)
)

// serviceStates are every state a supervised service can be in, so each gets a series.
var serviceStates = []supervisor.State{supervisor.Stopped, supervisor.Starting, supervisor.Ready, supervisor.Backoff, supervisor.Errored}

var slotStatuses = []string{state.SlotIdle, state.SlotBusy, state.SlotStopped}

// ObserveState exports, at every scrape, what the state store knows: the queue depth, the slots
// by status, whether the machine is drained, and each supervised service's state and restarts
// (the alert rules in deploy/monitoring use them).
func (m *Metrics) ObserveState(snapshot func() state.Snapshot) {
	m.Registry.MustRegister(stateCollector{snapshot})
}

type stateCollector struct{ snapshot func() state.Snapshot }

func (stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queueDepthDesc, slotsDesc, pausedDesc, serviceStateDesc, serviceRestartsDesc,
		modelCacheBytesDesc, modelCacheModelsDesc, modelCacheLookupsDesc, modelCacheDownloadsDesc, modelCacheDownloadedDesc, modelCacheEvictionsDesc} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	snap := c.snapshot()
	ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(snap.QueueDepth))
	paused := 0.0
	if snap.Paused {
		paused = 1
	}
	ch <- prometheus.MustNewConstMetric(pausedDesc, prometheus.GaugeValue, paused)
	counts := map[string]map[string]int{} // connector → status → slots
	var connectors []string
	for _, s := range snap.Slots {
		if counts[s.Connector] == nil {
			counts[s.Connector] = map[string]int{}
			connectors = append(connectors, s.Connector)
		}
		counts[s.Connector][s.Status]++
	}
	for _, conn := range connectors {
		for _, st := range slotStatuses {
			ch <- prometheus.MustNewConstMetric(slotsDesc, prometheus.GaugeValue, float64(counts[conn][st]), conn, st)
		}
	}
	for _, svc := range snap.Services {
		for _, st := range serviceStates {
			v := 0.0
			if svc.State == string(st) {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(serviceStateDesc, prometheus.GaugeValue, v, svc.Name, string(st))
		}
		ch <- prometheus.MustNewConstMetric(serviceRestartsDesc, prometheus.CounterValue, float64(svc.Restarts), svc.Name)
	}
	if c := snap.ModelCache; c.On {
		gauge := func(d *prometheus.Desc, v int64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
		}
		counter := func(d *prometheus.Desc, v int64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
		}
		gauge(modelCacheBytesDesc, c.UsedBytes, "used")
		gauge(modelCacheBytesDesc, c.BudgetBytes, "budget")
		gauge(modelCacheModelsDesc, int64(len(c.OnDisk)), "on_disk")
		gauge(modelCacheModelsDesc, int64(len(c.Downloading)), "downloading")
		counter(modelCacheLookupsDesc, c.Hits, "hit")
		counter(modelCacheLookupsDesc, c.Misses, "miss")
		counter(modelCacheDownloadsDesc, c.Downloads)
		counter(modelCacheDownloadedDesc, c.BytesDownloaded)
		counter(modelCacheEvictionsDesc, c.Evictions)
	}
}
