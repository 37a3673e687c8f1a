package demand

import (
	"context"
	"time"

	"github.com/emp-job-queue/machine/core/autoscale"
	"github.com/emp-job-queue/machine/core/broker"
	coredemand "github.com/emp-job-queue/machine/core/demand"
)

// states is what the autoscaler sees: slots and load from the simulated machine, pending
// jobs from the demand tracker.
func (r *run) states() []autoscale.Connector {
	var out []autoscale.Connector
	for _, c := range r.conns {
		busy := 0
		for _, s := range c.slots {
			if s.j != nil {
				busy++
			}
		}
		slots := len(c.slots)
		if c.enabled {
			slots = c.want
		}
		out = append(out, autoscale.Connector{Name: c.name, Enabled: c.enabled, Slots: slots, Busy: busy,
			Pending: r.tracker.PendingFor(c.name), LastJob: c.lastJob, GPU: true})
	}
	return out
}

func (r *run) headroom() autoscale.Headroom {
	used := 0
	for _, c := range r.conns {
		used += max(len(c.slots), c.want)
	}
	return autoscale.Headroom{GPUFreeMemGB: gpuMemoryGB - slotMemoryGB*float64(used), RAMFreeGB: 64}
}

// apply does what the machine's reconciler would: enable (the service starts after
// ServiceStart), resize, disable (slots drain).
func (r *run) apply(ds []autoscale.Decision) {
	for _, d := range ds {
		c := r.conns[d.Connector]
		switch d.Kind {
		case autoscale.Enable:
			c.enabled, c.want, c.readyAt = true, d.Count, r.now.Add(r.o.ServiceStart)
			if c.lastJob.IsZero() {
				c.lastJob = r.now
			}
		case autoscale.Resize:
			c.want = d.Count
		case autoscale.Disable:
			c.enabled, c.want = false, 0
		}
		r.res.decisions = append(r.res.decisions, d)
	}
}

// prefetch downloads what pending jobs for this machine's connectors need; each download
// occupies the link for its virtual duration.
func (r *run) prefetch(ctx context.Context) error {
	var services []string
	for _, c := range r.conns {
		if c.enabled {
			services = append(services, c.name)
		}
	}
	fetched, err := r.cache.Prefetch(ctx, r.tracker.Wanted(services, 4))
	for _, name := range fetched {
		r.download(name)
	}
	return err
}

// download books the link for a model and returns when it is on disk, in virtual time.
func (r *run) download(name string) time.Time {
	start := r.now
	if r.linkFree.After(start) {
		start = r.linkFree
	}
	size := int64(len(r.tr.models[name].body))
	done := start.Add(time.Duration(float64(size) / float64(r.o.Bandwidth) * float64(time.Second)))
	r.linkFree, r.ready[name] = done, done
	return done
}

// claim lets every idle slot of a started connector claim, through the real claim script.
func (r *run) claim(ctx context.Context, shiftAt time.Duration) error {
	for _, name := range []string{serviceA, serviceB} {
		c := r.conns[name]
		if !c.enabled || c.readyAt.After(r.now) {
			continue
		}
		for _, s := range c.slots {
			if s.j != nil || r.pending[name] == 0 {
				continue
			}
			caps, err := broker.Capabilities{WorkerID: s.worker, Services: []string{name}}.Encode()
			if err != nil {
				return err
			}
			j, _, err := r.b.Claim(ctx, caps, 100, 0)
			if err != nil || j == nil {
				return err
			}
			r.pending[name]--
			r.expected++
			if err := r.b.Start(ctx, j, s.worker); err != nil {
				return err
			}
			if name == serviceB && r.res.firstShiftClaim == 0 {
				r.res.firstShiftClaim = r.now.Sub(epoch) - shiftAt
			}
			ready := r.now
			for _, m := range coredemand.Models(j.Payload, nil) {
				before := r.cache.Stats().Hits
				_, rel, err := r.cache.Ensure(ctx, m, nil)
				if err != nil {
					return err
				}
				s.release = append(s.release, rel)
				r.res.requests++
				at, known := r.ready[m]
				switch {
				case r.cache.Stats().Hits == before: // missing: the job downloads it
					at = r.download(m)
				case known && at.After(r.now): // being prefetched: the job waits for the rest
				default:
					r.res.hits++
					at = r.now
				}
				if at.After(ready) {
					ready = at
				}
			}
			a := r.byID[j.ID]
			r.res.waits = append(r.res.waits, ready.Sub(epoch.Add(a.at)))
			s.j, s.busyUntil = j, ready.Add(r.o.LoadTime+a.run)
		}
	}
	return nil
}
