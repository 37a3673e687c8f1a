// Package registry lists the connector types this build runs. Adding a connector means writing
// its package (with its Descriptor) and adding one line to the list below.
package registry

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/connectors/a1111"
	"github.com/emp-job-queue/machine/core/connectors/comfyui"
	"github.com/emp-job-queue/machine/core/connectors/gemini"
	"github.com/emp-job-queue/machine/core/connectors/mock"
	"github.com/emp-job-queue/machine/core/connectors/ollama"
	"github.com/emp-job-queue/machine/core/connectors/openai"
	"github.com/emp-job-queue/machine/core/connectors/playwright"
	"github.com/emp-job-queue/machine/core/connectors/replicate"
	"github.com/emp-job-queue/machine/core/connectors/runpod"
	"github.com/emp-job-queue/machine/core/connectors/simulation"
)

// all is every connector type, one line each.
var all = []connectors.Descriptor{
	a1111.Descriptor,
	comfyui.Descriptor,
	comfyui.RemoteDescriptor,
	gemini.Descriptor,
	mock.Descriptor,
	ollama.Descriptor,
	openai.Descriptor,
	playwright.Descriptor,
	replicate.Descriptor,
	runpod.Descriptor,
	simulation.Descriptor,
}

// Lookup returns the connector type with the given name.
func Lookup(name string) (connectors.Descriptor, bool) {
	i := slices.IndexFunc(all, func(d connectors.Descriptor) bool { return d.Name == name })
	if i < 0 {
		return connectors.Descriptor{}, false
	}
	return all[i], true
}

// Names returns every connector type's name, sorted.
func Names() []string {
	names := make([]string, len(all))
	for i, d := range all {
		names[i] = d.Name
	}
	slices.Sort(names)
	return names
}

// ServiceKind returns the service kind with the given name, from the connector that needs it.
func ServiceKind(kind string) (*connectors.ServiceKind, bool) {
	for _, d := range all {
		if d.Service != nil && d.Service.Kind == kind {
			return d.Service, true
		}
	}
	return nil, false
}

// Check lists every problem of the configured connectors at once: names this build does not
// know, and what each connector needs from the configuration (a key). It returns nil or
// config.Problems.
func Check(cfg *config.Config) error {
	var problems config.Problems
	for _, c := range cfg.Connectors {
		d, ok := Lookup(c.Name)
		if !ok {
			problems = append(problems, fmt.Sprintf("WORKER_CONNECTORS names unknown connector %q; known connectors: %s",
				c.Name, strings.Join(Names(), ", ")))
			continue
		}
		if d.Check != nil {
			problems = append(problems, d.Check(cfg)...)
		}
	}
	for _, name := range cfg.Demand.Allowed {
		if _, ok := Lookup(name); !ok {
			problems = append(problems, fmt.Sprintf("MACHINE_ALLOWED_CONNECTORS names unknown connector %q; known connectors: %s",
				name, strings.Join(Names(), ", ")))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Demand.Bounds)) {
		if _, ok := Lookup(name); !ok {
			problems = append(problems, fmt.Sprintf("MACHINE_AUTOSCALE_BOUNDS names unknown connector %q; known connectors: %s",
				name, strings.Join(Names(), ", ")))
		}
	}
	if len(problems) > 0 {
		return problems
	}
	return nil
}
