package state

import (
	"slices"

	"github.com/emp-job-queue/machine/core/job"
)

// ServiceCost summarizes the resource records of one service's jobs over the last hour
// (core/accounting computes it).
type ServiceCost struct {
	Service    string
	Jobs       int
	RunMeanMS  float64
	RunP95MS   float64
	WhMean     *float64 // nil when no job's energy was measured
	WhP95      *float64
	GPUSeconds float64 // over every job of the hour
	EnergyWh   float64 // over the jobs whose energy was measured
}

// SetJobResources records the resource record of the job a slot holds, just before its end:
// JobEnded moves it into the finished job. It does not signal readers, since JobEnded follows
// at once; a record for a job the slot no longer holds is dropped.
func (s *Store) SetJobResources(slotID, jobID string, r *job.Resources) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slot(&s.snap, slotID); sl != nil && sl.JobID == jobID {
		sl.Resources = r
	}
}

// SetCosts records the per-service cost summary.
func (s *Store) SetCosts(costs []ServiceCost) {
	s.update(reading, func(snap *Snapshot) { snap.Costs = slices.Clone(costs) })
}
