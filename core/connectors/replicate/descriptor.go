package replicate

import (
	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors"
)

// Descriptor is the replicate connector.
var Descriptor = connectors.Descriptor{
	Name: "replicate", JobServices: []string{"replicate"}, StatusServices: []string{"replicate"},
	Check: func(c *config.Config) []string {
		return connectors.NeedKey("replicate", c.Replicate.Key, "REPLICATE_API_TOKEN")
	},
	New: func(env connectors.Env) connectors.Connector {
		c := env.Config.Replicate
		return New(Settings{BaseURL: c.BaseURL, Token: c.Key, Assets: env.Assets, Downloads: env.Network, Throttle: env.Throttle})
	},
}
