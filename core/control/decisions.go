package control

// Demand is the queue's demand as the machine's demand tracker sees it, for the console's
// Decisions view.
type Demand struct {
	Tracked      bool            `json:"tracked"`
	Note         string          `json:"note,omitempty"` // why no tracker runs
	AgeMS        int64           `json:"age_ms"`         // since the tracker's view was taken
	QueueLength  int64           `json:"queue_length"`   // jobs:pending, all services
	Unattributed int64           `json:"unattributed"`   // pending jobs not attributed to a service
	Services     []ServiceDemand `json:"services,omitempty"`
	Models       []ModelDemand   `json:"models,omitempty"` // most wanted first
}

// ServiceDemand is one service's pending jobs and arrival rate.
type ServiceDemand struct {
	Service string  `json:"service"`
	Pending int     `json:"pending"`
	PerMin  float64 `json:"arrivals_per_min"`
}

// ModelDemand is the demand for one model.
type ModelDemand struct {
	Name    string  `json:"name"`
	Pending int     `json:"pending"`
	Score   float64 `json:"score"`
}

// CachedModel is one model on disk in the model cache.
type CachedModel struct {
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"` // 0: not in the catalogue
}
