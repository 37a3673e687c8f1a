package gemini

import (
	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors"
)

// Descriptor is the gemini connector: gem-nano-banana image jobs sent to Google's Gemini API.
var Descriptor = connectors.Descriptor{
	Name: "gemini", JobServices: []string{"gem-nano-banana"}, StatusServices: []string{"gem-nano-banana"},
	Check: func(c *config.Config) []string {
		return connectors.NeedKey("gemini", c.Gemini.APIKey, "GEMINI_API_KEY")
	},
	New: func(env connectors.Env) connectors.Connector {
		c := env.Config.Gemini
		return New(Settings{URL: c.URL, APIKey: c.APIKey, Timeout: c.Timeout, MaxRetries: c.MaxRetries,
			RatePerSec: c.RatePerSec, Assets: env.Assets, Throttle: env.Throttle})
	},
}
