package machine

import (
	"maps"
	"math"
	"reflect"

	"github.com/emp-job-queue/machine/core/state"
)

// publish copies the tracker's view into the state store when it changed (rates rounded to
// 0.01/min, so their decay alone does not publish a new snapshot every time).
func (d *demandWatch) publish() {
	s := d.tracker.Snapshot()
	v := state.Demand{Tracked: true, At: s.At, QueueLength: s.QueueLength, Unattributed: s.Unattrib,
		Pending: maps.Clone(s.Pending), Rates: make(map[string]float64, len(s.Rates))}
	for svc, r := range s.Rates {
		if r = math.Round(r*100) / 100; r > 0 {
			v.Rates[svc] = r
		}
	}
	for _, m := range s.Models[:min(len(s.Models), demandViewModels)] {
		v.Models = append(v.Models, state.DemandModel{Name: m.Name, Pending: m.Pending, Score: math.Round(m.Score*100) / 100})
	}
	prev := d.last
	prev.At = v.At
	d.last = v
	if !reflect.DeepEqual(prev, v) {
		d.store.SetDemand(v)
	}
}

// noDemandNote says why the machine runs no demand tracker.
const noDemandNote = "not tracked: the autoscaler is off (MACHINE_AUTOSCALE) and there is no model cache (MACHINE_MODEL_CACHE_GB=0)"
