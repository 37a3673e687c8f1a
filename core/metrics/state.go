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
	for _, d := range []*prometheus.Desc{queueDepthDesc, slotsDesc, pausedDesc, serviceStateDesc, serviceRestartsDesc} {
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
}
