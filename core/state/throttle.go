package state

import (
	"maps"

	"github.com/emp-job-queue/machine/core/connectors/throttle"
)

// Throttle returns how a connector's remote API pushes back (429s, breaker, last errors); ok is
// false for a connector that reports none (one that is not a remote API, or not built yet).
func (s Snapshot) Throttle(connector string) (throttle.State, bool) {
	t, ok := s.Throttles[connector]
	return t, ok
}

// SetThrottle records a connector's throttle record (core/connectors/throttle). States are
// immutable, so the store keeps them as they are.
func (s *Store) SetThrottle(connector string, t throttle.State) {
	s.update(event, func(snap *Snapshot) {
		m := maps.Clone(snap.Throttles)
		if m == nil {
			m = map[string]throttle.State{}
		}
		m[connector] = t
		snap.Throttles = m
	})
}
