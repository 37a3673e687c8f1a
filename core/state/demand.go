package state

import "time"

// Demand is what the machine's demand tracker (core/demand) last saw of the queue, published
// by core/machine's demand view for /status and the console. Its map and slices are replaced,
// never changed, once stored.
type Demand struct {
	Tracked      bool      // a tracker runs (the autoscaler or the model cache is on)
	Note         string    // why no tracker runs
	At           time.Time // when the tracker's view was taken
	QueueLength  int64     // jobs:pending, all services
	Unattributed int64     // pending jobs not (yet) attributed to a service
	Pending      map[string]int
	Rates        map[string]float64 // arrivals per minute, by service
	Models       []DemandModel      // most wanted first, a few at most
}

// DemandModel is the demand for one model.
type DemandModel struct {
	Name    string
	Pending int // pending jobs that reference it
	Score   float64
}

// SetDemand records the demand tracker's view.
func (s *Store) SetDemand(d Demand) {
	s.update(reading, func(snap *Snapshot) { snap.Demand = d })
}
