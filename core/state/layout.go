package state

import (
	"slices"
	"time"
)

// ConnectorState is where a connector stands in the running layout.
type ConnectorState string

const (
	ConnectorEnabled    ConnectorState = "enabled"
	ConnectorInstalling ConnectorState = "installing" // its service is being installed and started
	ConnectorDraining   ConnectorState = "draining"   // its removed slots finish their jobs
	ConnectorDisabled   ConnectorState = "disabled"   // not running; the console can enable it again
	ConnectorFailed     ConnectorState = "failed"     // its last change failed (Error says why); what ran before still runs
)

// Connector is one connector the machine runs or ran since it started.
type Connector struct {
	Name  string
	State ConnectorState
	Slots int    // slots it has in the running layout
	Error string // why its last change failed
}

// ChangeState is how far a change of the running layout got.
type ChangeState string

const (
	ChangeQueued   ChangeState = "queued"   // waits for the change before it
	ChangeApplying ChangeState = "applying" // installing, starting or draining
	ChangeDone     ChangeState = "done"
	ChangeFailed   ChangeState = "failed" // the layout before it is still in force
)

// Change is one requested change of the running layout (enable, disable or resize a
// connector) and how it went: every reader sees its progress and outcome.
type Change struct {
	ID          uint64
	What        string // e.g. "enable playwright"
	State       ChangeState
	Message     string // the latest progress, or the outcome
	Error       string // why it failed
	RequestedAt time.Time
	StartedAt   time.Time
	FinishedAt  time.Time
}

const changesCap = 20

// Connector returns a connector's state.
func (s Snapshot) Connector(name string) (Connector, bool) {
	for _, c := range s.Connectors {
		if c.Name == name {
			return c, true
		}
	}
	return Connector{}, false
}

// Change returns the change with the given id, if it is still among the recent ones.
func (s Snapshot) Change(id uint64) (Change, bool) {
	for _, c := range s.Changes {
		if c.ID == id {
			return c, true
		}
	}
	return Change{}, false
}

// SetConnector records a connector's state, adding it the first time.
func (s *Store) SetConnector(c Connector) {
	s.update(workerEvent, func(snap *Snapshot) {
		snap.Connectors = slices.Clone(snap.Connectors)
		for i := range snap.Connectors {
			if snap.Connectors[i].Name == c.Name {
				snap.Connectors[i] = c
				return
			}
		}
		snap.Connectors = append(snap.Connectors, c)
	})
}

// SetChange records a change of the layout, adding it the first time; the last 20 are kept.
func (s *Store) SetChange(c Change) {
	s.update(workerEvent, func(snap *Snapshot) {
		snap.Changes = slices.Clone(snap.Changes)
		for i := range snap.Changes {
			if snap.Changes[i].ID == c.ID {
				snap.Changes[i] = c
				return
			}
		}
		snap.Changes = append(snap.Changes, c)
		if len(snap.Changes) > changesCap {
			snap.Changes = snap.Changes[len(snap.Changes)-changesCap:]
		}
	})
}
