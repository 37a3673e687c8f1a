package simulation

import (
	"github.com/emp-job-queue/machine/core/connectors"
)

// Descriptor is the simulation connector: GPU-bound like real work, so the demo shows one slot
// per GPU and the simulated GPUs' load follows its jobs.
var Descriptor = connectors.Descriptor{
	Name: "simulation", JobServices: []string{"simulation"}, StatusServices: []string{"simulation"}, GPUBound: true,
	New: func(env connectors.Env) connectors.Connector {
		s := env.Config.Simulation
		return New(Settings{Duration: s.Duration, Steps: s.Steps, FailureRate: s.FailureRate})
	},
}
