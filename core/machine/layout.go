package machine

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors/registry"
	"github.com/emp-job-queue/machine/core/plan"
)

// layout is what the machine runs: the configuration's connectors and their plan. The
// reconciler changes it when an operator (or, later, the autoscaler) enables, disables or
// resizes a connector; readers load the one in force from Machine.cur.
type layout struct {
	cfg  *config.Config
	plan *plan.Plan
}

func (m *Machine) layout() *layout { return m.cur.Load() }

// emptyLayout runs nothing: where a booting machine starts from.
func emptyLayout(cfg *config.Config) *layout {
	c := *cfg
	c.Connectors = nil
	return &layout{cfg: &c, plan: &plan.Plan{MachineID: cfg.MachineID, GPUCount: cfg.GPUCount}}
}

// opKind is what a change does to one connector.
type opKind int

const (
	opEnable  opKind = iota // add it: count slots, or one per GPU instance (GPU-bound) or one (0: auto)
	opDisable               // drain and remove its slots, and the services no other connector needs
	opResize                // set its slot count (enabling it when it is not)
)

// op is one typed change of the layout.
type op struct {
	kind      opKind
	connector string
	count     int
}

func (o op) String() string {
	switch {
	case o.kind == opDisable:
		return "disable " + o.connector
	case o.kind == opResize:
		return fmt.Sprintf("set %s to %d slot(s)", o.connector, o.count)
	case o.count > 0:
		return fmt.Sprintf("enable %s with %d slot(s)", o.connector, o.count)
	default:
		return "enable " + o.connector
	}
}

// next returns the layout o makes of l, or one sentence saying why it cannot be made. Every
// live change passes here, whoever asked (console, control socket, HTTP), so the bounds are
// those of the configuration, checked once.
func (o op) next(l *layout) (*layout, error) {
	cfg := *l.cfg
	cfg.Connectors = slices.Clone(l.cfg.Connectors)
	i := slices.IndexFunc(cfg.Connectors, func(c config.Connector) bool { return c.Name == o.connector })
	switch o.kind {
	case opDisable:
		if i < 0 {
			return nil, fmt.Errorf("connector %q is not enabled on this machine", o.connector)
		}
		cfg.Connectors = slices.Delete(cfg.Connectors, i, i+1)
	case opResize:
		if err := config.CheckSlotCount(o.count, 1); err != nil {
			return nil, fmt.Errorf("%s: %w; disable the connector to stop it", o.connector, err)
		}
		if i < 0 {
			cfg.Connectors = append(cfg.Connectors, config.Connector{Name: o.connector, Count: o.count})
		} else {
			cfg.Connectors[i] = config.Connector{Name: o.connector, Count: o.count}
		}
	case opEnable:
		if i >= 0 {
			return nil, fmt.Errorf("connector %q is already enabled; set its concurrency to change its slot count", o.connector)
		}
		want := config.Connector{Name: o.connector, Count: o.count, Auto: o.count == 0}
		if !want.Auto {
			if err := config.CheckSlotCount(o.count, 1); err != nil {
				return nil, fmt.Errorf("%s: %w", o.connector, err)
			}
		}
		cfg.Connectors = append(cfg.Connectors, want)
	}
	if err := registry.Check(&cfg); err != nil {
		return nil, err
	}
	p, err := plan.New(&cfg)
	if err != nil {
		return nil, err
	}
	return &layout{cfg: &cfg, plan: p}, nil
}

// diff is what turns one layout into another.
type diff struct {
	added    []plan.Slot
	removed  []string
	services []plan.Service // to install and start
	gone     []plan.Service // no connector needs them any more
}

func diffLayouts(from, to *layout) diff {
	var d diff
	has := func(p *plan.Plan, id string) bool {
		return slices.ContainsFunc(p.Slots, func(s plan.Slot) bool { return s.ID == id })
	}
	for _, s := range to.plan.Slots {
		if !has(from.plan, s.ID) {
			d.added = append(d.added, s)
		}
	}
	for _, s := range from.plan.Slots {
		if !has(to.plan, s.ID) {
			d.removed = append(d.removed, s.ID)
		}
	}
	d.services = servicesOnlyIn(to.plan, from.plan)
	d.gone = servicesOnlyIn(from.plan, to.plan)
	return d
}

// describe says in one sentence what applying d does.
func (d diff) describe(drain time.Duration) string {
	var parts []string
	switch {
	case len(d.services) > 0:
		parts = append(parts, fmt.Sprintf("installing and starting %d service(s) (%s); %d slot(s) claim once they are ready",
			len(d.services), serviceNames(d.services), len(d.added)))
	case len(d.added) > 0:
		parts = append(parts, fmt.Sprintf("%d slot(s) start", len(d.added)))
	}
	if len(d.removed) > 0 {
		parts = append(parts, fmt.Sprintf("draining %d slot(s): their jobs finish, or go back to the queue after %s", len(d.removed), drain))
	}
	if len(d.gone) > 0 {
		parts = append(parts, fmt.Sprintf("then stopping %s", serviceNames(d.gone)))
	}
	if len(parts) == 0 {
		return "nothing to change"
	}
	return strings.Join(parts, "; ")
}

// servicesOnlyIn lists the services of a that b does not have.
func servicesOnlyIn(a, b *plan.Plan) []plan.Service {
	var out []plan.Service
	for _, svc := range a.Services {
		if b.Service(svc.Name) == nil {
			out = append(out, svc)
		}
	}
	return out
}

func serviceNames(svcs []plan.Service) string {
	names := make([]string, len(svcs))
	for i, s := range svcs {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}
