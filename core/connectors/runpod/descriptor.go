package runpod

import (
	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors"
)

// Descriptor is the runpod connector.
var Descriptor = connectors.Descriptor{
	Name: "runpod", JobServices: []string{"runpod"}, StatusServices: []string{"runpod"},
	Check: func(c *config.Config) []string { return connectors.NeedKey("runpod", c.RunPod.Key, "RUNPOD_API_KEY") },
	New: func(env connectors.Env) connectors.Connector {
		c := env.Config.RunPod
		return New(Settings{BaseURL: c.BaseURL, APIKey: c.Key, EndpointID: c.Endpoint, Throttle: env.Throttle})
	},
}
