package state

import (
	"maps"
	"slices"
	"time"
)

// Autoscaler is what the demand-aware autoscaler (core/machine's autoscaler) last saw and did.
type Autoscaler struct {
	On          bool           // the autoscaler runs (MACHINE_AUTOSCALE=on with something to scale)
	Note        string         // why it is off, or what it is waiting for
	At          time.Time      // its last round
	QueueLength int64          // jobs:pending, all services
	Pending     map[string]int // pending jobs by service, as the demand tracker knows them
	Decisions   []Decision     // the recent decisions, oldest first (the last decisionsCap)
}

// Decision is one autoscaler decision and how it went.
type Decision struct {
	At        time.Time
	Kind      string // enable, resize, disable
	Connector string
	From      int
	Count     int
	Reason    string
	Outcome   string // "queued as change N", or why the reconciler refused it
	Change    uint64 // the connector change it queued (0: refused)
}

const decisionsCap = 20

// SetAutoscaler records the autoscaler's state after a round; its decisions are added with
// AddDecision and kept.
func (s *Store) SetAutoscaler(on bool, note string, at time.Time, queue int64, pending map[string]int) {
	s.update(reading, func(snap *Snapshot) {
		a := snap.Autoscaler
		a.On, a.Note, a.At, a.QueueLength, a.Pending = on, note, at, queue, maps.Clone(pending)
		snap.Autoscaler = a
	})
}

// AddDecision records one decision; the last 20 are kept.
func (s *Store) AddDecision(d Decision) {
	s.update(event, func(snap *Snapshot) {
		ds := append(slices.Clone(snap.Autoscaler.Decisions), d)
		if len(ds) > decisionsCap {
			ds = ds[len(ds)-decisionsCap:]
		}
		snap.Autoscaler.Decisions = ds
	})
}
