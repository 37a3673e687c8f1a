// Package state is the machine's single source of truth for what the health server, the
// machine-status publisher and (later) the console show. Components report into the Store;
// readers take immutable snapshots and never reach into a component's internals.
package state

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/emp-job-queue/machine/core/connectors/throttle"
	"github.com/emp-job-queue/machine/core/job"
)

// Phase is the machine's lifecycle phase, as the monitor knows it.
type Phase string

const (
	Starting Phase = "starting"
	Ready    Phase = "ready"
	Draining Phase = "draining" // SIGTERM: no new claims, in-flight jobs finishing
	Shutdown Phase = "shutdown"
)

// Slot status values, as written to worker:{id}.
const (
	SlotIdle    = "idle"
	SlotBusy    = "busy"
	SlotStopped = "offline"
)

// Slot is one worker slot as readers see it.
type Slot struct {
	ID           string
	Connector    string
	GPU          int
	Status       string
	JobID        string
	JobService   string
	JobStartedAt time.Time
	Progress     float64
	Message      string
	Completed    uint64
	Failed       uint64 // attempts that failed, retried or not
	LastError    string
	LastActivity time.Time
	Resources    *job.Resources // the job's resource record, set just before it ends
	// ClaimError is why the slot's last claims failed, while they keep failing ("" when it claims).
	ClaimError string
	Info       JobInfo         // of the job in hand
	Steps      []ProgressPoint // its progress reports, oldest first (the last maxSteps)
}

// Finished is a recently ended job, newest last.
type Finished struct {
	JobID    string
	SlotID   string
	Service  string
	Outcome  job.Outcome
	Error    string
	Duration time.Duration
	At       time.Time
	// Resources is the attempt's resource record (nil when the machine keeps none).
	Resources *job.Resources
	Info      JobInfo
	Steps     []ProgressPoint
}

// Broker is the state of the machine's broker connection.
type Broker struct {
	URL       string // password redacted
	Embedded  bool
	Connected bool
	LastError string
}

// Snapshot is an immutable copy of the machine's state.
type Snapshot struct {
	// Version grows on every change; WorkersVersion only on changes the monitor must hear of at
	// once (a slot's status or job, the phase, the broker connection), not on progress.
	Version        uint64
	WorkersVersion uint64
	MachineID      string
	Pool           string
	Phase          Phase
	StartedAt      time.Time
	Broker         Broker
	Slots          []Slot
	Recent         []Finished
	// Telemetry is the GPU sampler's latest sample (GPUs, host, services).
	Telemetry Telemetry
	// GPUSource says where GPU readings come from ("nvml", "fake").
	GPUSource string
	// Services are the supervised services, in plan order.
	Services []Service
	// Paused is true while the operator has drained the machine: slots claim nothing.
	Paused bool
	// QueueDepth counts pending jobs for the services this machine serves.
	QueueDepth int64
	// Connectors are the connectors the machine runs or ran since it started, in the order
	// they were first enabled; Changes the recent changes of the layout, oldest first.
	Connectors []Connector
	Changes    []Change
	// Costs summarize the jobs' resource records per service over the last hour.
	Costs []ServiceCost
	// Durations are the fleet's expected job durations (jobs:stats:duration) for this
	// machine's services, most counted first, a few at most.
	Durations []Duration
	// Ended counts the jobs ended (completed or failed) since start; Trends is the recent history
	// the console graphs.
	Ended  uint64
	Trends Trends
	// Autoscaler is the demand-aware autoscaler's state and recent decisions.
	Autoscaler Autoscaler
	// Throttles are the remote API connectors' throttle records, by connector; the map is
	// replaced, never changed, so snapshots share it.
	Throttles map[string]throttle.State
	// ModelCache is the model cache's figures (On false: no model cache).
	ModelCache ModelCache
	// Demand is the demand tracker's view of the queue (Tracked false: no tracker runs).
	Demand Demand
}

// Service returns a supervised service's status.
func (s Snapshot) Service(name string) (Service, bool) {
	for _, st := range s.Services {
		if st.Name == name {
			return st, true
		}
	}
	return Service{}, false
}

// ClaimTrouble says why slots cannot claim jobs, or "" when they all can.
func (s Snapshot) ClaimTrouble() string {
	failing, first := 0, -1
	for i, sl := range s.Slots {
		if sl.ClaimError != "" {
			failing++
			if first < 0 {
				first = i
			}
		}
	}
	if failing == 0 {
		return ""
	}
	return fmt.Sprintf("%d of %d slots cannot claim jobs; %s: %s", failing, len(s.Slots), s.Slots[first].ID, s.Slots[first].ClaimError)
}

// Slot returns the slot with the given id.
func (s Snapshot) Slot(id string) (Slot, bool) {
	for _, sl := range s.Slots {
		if sl.ID == id {
			return sl, true
		}
	}
	return Slot{}, false
}

const recentCap = 100

// change says who must hear of an update at once.
type change uint8

const (
	// reading is a new periodic reading (GPU telemetry, a service's resources, the queue's
	// depth, the demand): a console may take a few of them in one snapshot.
	reading change = 1 << iota
	// event is something that happened (a job moved, a slot, service or connector changed):
	// consoles show it at once.
	event
	// workerEvent is an event the monitor must hear of at once too: it moves WorkersVersion.
	workerEvent
)

// Store holds the state. It is safe for concurrent use.
type Store struct {
	mu   sync.Mutex
	snap Snapshot
	subs map[chan struct{}]change // what each subscriber is signalled after
	now  func() time.Time
}

// New returns a store for a machine with the given slots, all idle, in phase Starting.
func New(machineID, pool string, slots []Slot) *Store {
	now := time.Now()
	for i := range slots {
		slots[i].Status = SlotIdle
		slots[i].LastActivity = now
	}
	return &Store{
		snap: Snapshot{MachineID: machineID, Pool: pool, Phase: Starting, StartedAt: now, Slots: slots},
		subs: map[chan struct{}]change{},
		now:  time.Now,
	}
}

// Snapshot returns a copy of the current state.
func (s *Store) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.snap
	c.Slots = slices.Clone(s.snap.Slots)
	c.Recent = slices.Clone(s.snap.Recent[max(0, len(s.snap.Recent)-recentCap):])
	c.Services = slices.Clone(s.snap.Services)
	c.Connectors = slices.Clone(s.snap.Connectors)
	c.Changes = slices.Clone(s.snap.Changes)
	c.Costs = slices.Clone(s.snap.Costs)
	c.Durations = slices.Clone(s.snap.Durations)
	return c
}

// Versions returns the change counters without copying the state.
func (s *Store) Versions() (all, workers uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snap.Version, s.snap.WorkersVersion
}

// Subscribe returns a channel that receives a signal after changes (coalesced: one pending
// signal at most) and a function that ends the subscription.
func (s *Store) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	return ch, s.subscribe(map[chan struct{}]change{ch: reading | event | workerEvent})
}

// SubscribeSplit is Subscribe with events and new readings on channels of their own, so a
// console can show events at once and take readings at its own pace.
func (s *Store) SubscribeSplit() (events, readings <-chan struct{}, stop func()) {
	ev, rd := make(chan struct{}, 1), make(chan struct{}, 1)
	return ev, rd, s.subscribe(map[chan struct{}]change{ev: event | workerEvent, rd: reading})
}

func (s *Store) subscribe(chans map[chan struct{}]change) (stop func()) {
	s.mu.Lock()
	maps.Copy(s.subs, chans)
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		for ch := range chans {
			delete(s.subs, ch)
		}
		s.mu.Unlock()
	}
}

// update applies fn under the lock and signals the subscribers that asked for kind.
func (s *Store) update(kind change, fn func(*Snapshot)) {
	s.mu.Lock()
	fn(&s.snap)
	s.snap.Version++
	if kind == workerEvent {
		s.snap.WorkersVersion++
	}
	for ch, wants := range s.subs {
		if wants&kind == 0 {
			continue
		}
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
}

// readingUnless is a reading, or a workerEvent where the update is one the monitor must hear
// of at once (a GPU going out of service, a service changing state).
func readingUnless(important bool) change {
	if important {
		return workerEvent
	}
	return reading
}

func (s *Store) slot(snap *Snapshot, id string) *Slot {
	for i := range snap.Slots {
		if snap.Slots[i].ID == id {
			return &snap.Slots[i]
		}
	}
	return nil
}

// SetTelemetry records the GPU sampler's latest sample. A GPU going out of service is a
// change the monitor must hear of at once; the readings themselves are not.
func (s *Store) SetTelemetry(t Telemetry) {
	s.mu.Lock()
	changed := !maps.Equal(s.snap.Telemetry.Unhealthy, t.Unhealthy)
	s.mu.Unlock()
	s.update(readingUnless(changed), func(snap *Snapshot) {
		snap.Telemetry = t
		snap.Trends = snap.Trends.next(t, snap.QueueDepth, snap.Ended)
	})
}

// SetService records a supervised service's status; a state change is one the monitor must
// hear of at once, a new RSS reading is not.
func (s *Store) SetService(st Service) {
	s.mu.Lock()
	old, ok := Snapshot{Services: s.snap.Services}.Service(st.Name)
	s.mu.Unlock()
	important := !ok || old.State != st.State || old.PID != st.PID
	s.update(readingUnless(important), func(snap *Snapshot) {
		for i := range snap.Services {
			if snap.Services[i].Name == st.Name {
				snap.Services[i] = st
				return
			}
		}
		snap.Services = append(snap.Services, st)
	})
}

// SetPaused records whether the operator drained the machine.
func (s *Store) SetPaused(p bool) {
	s.update(workerEvent, func(snap *Snapshot) { snap.Paused = p })
}

// SetQueueDepth records the pending jobs for this machine's services.
func (s *Store) SetQueueDepth(n int64) {
	s.mu.Lock()
	same := s.snap.QueueDepth == n
	s.mu.Unlock()
	if !same {
		s.update(reading, func(snap *Snapshot) { snap.QueueDepth = n })
	}
}

// Duration is the expected duration of one kind of job: an EWMA over the fleet's completions.
type Duration struct {
	Service, Model string
	EWMA           time.Duration
	Count          int64
}

// SetDurations records the expected job durations the claim's pool fit uses.
func (s *Store) SetDurations(d []Duration) {
	s.mu.Lock()
	same := slices.Equal(s.snap.Durations, d)
	s.mu.Unlock()
	if !same {
		s.update(reading, func(snap *Snapshot) { snap.Durations = slices.Clone(d) })
	}
}

// RemoveService forgets a service that no connector needs any more.
func (s *Store) RemoveService(name string) {
	s.update(workerEvent, func(snap *Snapshot) {
		snap.Services = slices.DeleteFunc(slices.Clone(snap.Services), func(st Service) bool { return st.Name == name })
	})
}

// SetGPUSource records where GPU readings come from.
func (s *Store) SetGPUSource(name string) {
	s.update(event, func(snap *Snapshot) { snap.GPUSource = name })
}

// AddSlots records new slots, idle.
func (s *Store) AddSlots(slots []Slot) {
	now := s.now()
	s.update(workerEvent, func(snap *Snapshot) {
		for _, sl := range slots {
			sl.Status, sl.LastActivity = SlotIdle, now
			snap.Slots = append(snap.Slots, sl)
		}
	})
}

// RemoveSlots forgets slots that stopped for good.
func (s *Store) RemoveSlots(ids []string) {
	s.update(workerEvent, func(snap *Snapshot) {
		snap.Slots = slices.DeleteFunc(slices.Clone(snap.Slots), func(sl Slot) bool { return slices.Contains(ids, sl.ID) })
	})
}

// Touch signals readers that something they derive from the store changed (a connector's
// state), without changing the store itself.
func (s *Store) Touch() { s.update(workerEvent, func(*Snapshot) {}) }

// SetPhase records the machine's phase.
func (s *Store) SetPhase(p Phase) {
	s.update(workerEvent, func(snap *Snapshot) { snap.Phase = p })
}

// SetBroker records the broker's URL and whether it is embedded.
func (s *Store) SetBroker(url string, embedded bool) {
	s.update(workerEvent, func(snap *Snapshot) { snap.Broker.URL, snap.Broker.Embedded = url, embedded })
}

// BrokerReachable records whether the broker answers; err explains why not.
func (s *Store) BrokerReachable(ok bool, err error) {
	s.mu.Lock()
	same := s.snap.Broker.Connected == ok && (err == nil) == (s.snap.Broker.LastError == "")
	s.mu.Unlock()
	if same {
		return
	}
	s.update(workerEvent, func(snap *Snapshot) {
		snap.Broker.Connected = ok
		snap.Broker.LastError = ""
		if err != nil {
			snap.Broker.LastError = err.Error()
		}
	})
}

// JobClaimed records that a slot took a job.
func (s *Store) JobClaimed(slotID, jobID, service string) {
	now := s.now()
	s.update(workerEvent, func(snap *Snapshot) {
		if sl := s.slot(snap, slotID); sl != nil {
			sl.Status, sl.JobID, sl.JobService, sl.JobStartedAt = SlotBusy, jobID, service, now
			sl.Progress, sl.Message, sl.LastActivity = 0, "", now
			sl.Info, sl.Steps = JobInfo{}, nil
		}
	})
}

// JobProgress records a running job's progress.
func (s *Store) JobProgress(slotID string, percent float64, message string) {
	now := s.now()
	s.update(event, func(snap *Snapshot) {
		if sl := s.slot(snap, slotID); sl != nil {
			sl.Progress, sl.Message, sl.LastActivity = percent, message, now
			sl.Steps = append(sl.Steps, ProgressPoint{At: now, Percent: percent, Message: message})
			if len(sl.Steps) > maxSteps {
				sl.Steps = slices.Clone(sl.Steps[len(sl.Steps)-maxSteps/2:])
			}
		}
	})
}

// JobEnded records the end of a slot's job: completed, retried, failed or released.
func (s *Store) JobEnded(slotID string, outcome job.Outcome, errText string) {
	now := s.now()
	s.update(workerEvent, func(snap *Snapshot) {
		sl := s.slot(snap, slotID)
		if sl == nil {
			return
		}
		switch outcome {
		case job.Completed:
			sl.Completed++
			snap.Ended++
		case job.Retried, job.Failed:
			sl.Failed++
			sl.LastError = errText
			snap.Ended++
		}
		snap.Recent = append(snap.Recent, Finished{
			JobID: sl.JobID, SlotID: slotID, Service: sl.JobService, Outcome: outcome, Error: errText,
			Duration: now.Sub(sl.JobStartedAt), At: now, Resources: sl.Resources,
			Info: sl.Info, Steps: sl.Steps,
		})
		if len(snap.Recent) > 2*recentCap { // trim in batches: jobs end thousands of times a second
			snap.Recent = slices.Clone(snap.Recent[len(snap.Recent)-recentCap:])
		}
		sl.Status, sl.JobID, sl.JobService, sl.Progress, sl.Message, sl.LastActivity = SlotIdle, "", "", 0, "", now
		sl.Resources = nil
		sl.Info, sl.Steps = JobInfo{}, nil
	})
}

// ClaimFailing records why a slot's claims keep failing; "" says it claims again.
func (s *Store) ClaimFailing(slotID, why string) {
	s.mu.Lock()
	sl := s.slot(&s.snap, slotID)
	same := sl == nil || sl.ClaimError == why
	s.mu.Unlock()
	if same {
		return
	}
	s.update(workerEvent, func(snap *Snapshot) {
		if sl := s.slot(snap, slotID); sl != nil {
			sl.ClaimError = why
		}
	})
}

// SlotStopped records that a slot stopped claiming for good.
func (s *Store) SlotStopped(slotID string) {
	s.update(workerEvent, func(snap *Snapshot) {
		if sl := s.slot(snap, slotID); sl != nil {
			sl.Status, sl.LastActivity = SlotStopped, s.now()
		}
	})
}
