package openai

import (
	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors"
)

// The job services the openai connector runs.
const (
	ServiceText      = "openai_text"
	ServiceImage     = "openai_image"
	ServiceImg2Img   = "openai_img2img"
	ServiceResponses = "openai_responses"
)

var services = []string{ServiceText, ServiceImage, ServiceImg2Img, ServiceResponses}

// Descriptor is the openai connector: text, images, image edits and background responses.
var Descriptor = connectors.Descriptor{
	Name:           "openai",
	JobServices:    services,
	StatusServices: []string{"openai-text", "openai-image", "openai-img2img", "openai-responses"},
	Check: func(c *config.Config) []string {
		return connectors.NeedKey("openai", c.OpenAI.APIKey, "OPENAI_API_KEY")
	},
	New: func(env connectors.Env) connectors.Connector {
		c := env.Config.OpenAI
		return New(Settings{BaseURL: c.BaseURL, APIKey: c.APIKey, TextModel: c.TextModel, ImageModel: c.ImageModel,
			RatePerSec: c.RatePerSec, Timeout: c.Timeout, Assets: env.Assets, Throttle: env.Throttle})
	},
}
