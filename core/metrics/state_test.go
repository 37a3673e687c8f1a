package metrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/emp-job-queue/machine/core/metrics"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/core/supervisor"
)

func TestObserveState(t *testing.T) {
	m := metrics.New()
	snap := state.Snapshot{QueueDepth: 42, Paused: true,
		Slots:    []state.Slot{{Connector: "comfyui", Status: state.SlotBusy}, {Connector: "comfyui", Status: state.SlotIdle}, {Connector: "mock", Status: state.SlotIdle}},
		Services: []state.Service{{Name: "comfyui-gpu0", State: string(supervisor.Backoff), Restarts: 7}}}
	m.ObserveState(func() state.Snapshot { return snap })
	want := `
# HELP machine_queue_depth Pending jobs for the services this machine serves (counted every 10 s).
# TYPE machine_queue_depth gauge
machine_queue_depth 42
# HELP machine_paused 1 while the operator has drained the machine: its slots claim nothing.
# TYPE machine_paused gauge
machine_paused 1
# HELP machine_slots Worker slots, by connector and status (idle, busy, offline).
# TYPE machine_slots gauge
machine_slots{connector="comfyui",status="busy"} 1
machine_slots{connector="comfyui",status="idle"} 1
machine_slots{connector="comfyui",status="offline"} 0
machine_slots{connector="mock",status="busy"} 0
machine_slots{connector="mock",status="idle"} 1
machine_slots{connector="mock",status="offline"} 0
# HELP machine_service_restarts_total Restarts of each supervised service since the machine started.
# TYPE machine_service_restarts_total counter
machine_service_restarts_total{service="comfyui-gpu0"} 7
# HELP machine_service_state 1 for the state each supervised service is in, 0 for the others.
# TYPE machine_service_state gauge
machine_service_state{service="comfyui-gpu0",state="backoff"} 1
machine_service_state{service="comfyui-gpu0",state="errored"} 0
machine_service_state{service="comfyui-gpu0",state="ready"} 0
machine_service_state{service="comfyui-gpu0",state="starting"} 0
machine_service_state{service="comfyui-gpu0",state="stopped"} 0
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "machine_queue_depth", "machine_paused", "machine_slots",
		"machine_service_restarts_total", "machine_service_state"); err != nil {
		t.Fatal(err)
	}
}
