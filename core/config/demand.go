package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Demand configures the demand-aware parts of the machine: the autoscaler (core/autoscale) and
// the model cache (core/modelcache). Every part can be switched off on its own.
type Demand struct {
	Autoscale     bool            // MACHINE_AUTOSCALE: on (default) or off, today's static layout exactly
	Bounds        map[string]Span // MACHINE_AUTOSCALE_BOUNDS: name:min-max,…; connectors not listed are never resized
	Allowed       []string        // MACHINE_ALLOWED_CONNECTORS: connectors started on demand and stopped when idle
	IdleTTL       time.Duration   // MACHINE_SERVICE_IDLE_TTL: an allowed connector idle this long is stopped; 0: never
	Cooldown      time.Duration   // MACHINE_AUTOSCALE_COOLDOWN: no reversal of a connector's change within it
	ModelCacheGB  float64         // MACHINE_MODEL_CACHE_GB: the model cache's disk budget; 0: no model cache
	ModelCatalog  string          // MACHINE_MODEL_CATALOG: the JSON catalogue of models (name, url, size, sha256, kind)
	ModelCacheDir string          // MACHINE_MODEL_CACHE_DIR: the shared model directory
	ModelPrefetch int             // MACHINE_MODEL_PREFETCH: prefetch downloads at once; 0: no prefetch
	PinnedModels  []string        // MACHINE_MODEL_PINNED: models never evicted
}

// Span is a connector's slot range.
type Span struct{ Min, Max int }

// demand reads the Demand settings.
func (r *reader) demand(c *Config) {
	d := &c.Demand
	switch v := strings.ToLower(r.str("MACHINE_AUTOSCALE", "on")); v {
	case "on", "true", "1":
		d.Autoscale = true
	case "off", "false", "0":
	default:
		r.problem("MACHINE_AUTOSCALE %q must be on or off", v)
	}
	// Which connector names exist is core/connectors/registry's to check (registry.Check), for
	// MACHINE_ALLOWED_CONNECTORS and MACHINE_AUTOSCALE_BOUNDS as for WORKER_CONNECTORS.
	d.Allowed = r.list("MACHINE_ALLOWED_CONNECTORS")
	d.Bounds = map[string]Span{}
	for _, item := range r.list("MACHINE_AUTOSCALE_BOUNDS") {
		name, span, _ := strings.Cut(item, ":")
		lo, hi, _ := strings.Cut(span, "-")
		mn, err1 := strconv.Atoi(lo)
		mx, err2 := strconv.Atoi(hi)
		switch {
		case err1 != nil || err2 != nil || mn < 1 || mx < mn || CheckSlotCount(mx, 1) != nil:
			r.problem("MACHINE_AUTOSCALE_BOUNDS entry %q must be name:min-max with 1 ≤ min ≤ max ≤ %d, e.g. openai:1-8", item, MaxSlots)
		default:
			d.Bounds[name] = Span{Min: mn, Max: mx}
		}
	}
	d.IdleTTL = r.optionalDuration("MACHINE_SERVICE_IDLE_TTL", 30*time.Minute)
	d.Cooldown = r.duration("MACHINE_AUTOSCALE_COOLDOWN", 2*time.Minute, "a duration such as 2m")
	d.ModelCacheGB = r.float("MACHINE_MODEL_CACHE_GB", 0, "the GB of disk the model cache may use, e.g. 200 (0: no model cache)")
	if d.ModelCacheGB < 0 {
		r.problem("MACHINE_MODEL_CACHE_GB %v must be 0 (no model cache) or more", d.ModelCacheGB)
	}
	d.ModelCatalog = r.str("MACHINE_MODEL_CATALOG", "")
	if d.ModelCacheGB > 0 && d.ModelCatalog == "" {
		r.problem("MACHINE_MODEL_CACHE_GB is set but MACHINE_MODEL_CATALOG is not; point it at the JSON catalogue of models the cache may download")
	}
	d.ModelCacheDir = r.str("MACHINE_MODEL_CACHE_DIR", c.CacheDir+"/models")
	d.ModelPrefetch = r.intRange("MACHINE_MODEL_PREFETCH", 2, 0, 32, "the number of prefetch downloads at once, e.g. 2 (0: no prefetch)")
	d.PinnedModels = r.list("MACHINE_MODEL_PINNED")
	for name := range d.Bounds {
		if slices.Contains(d.Allowed, name) {
			continue
		}
		if !slices.ContainsFunc(c.Connectors, func(x Connector) bool { return x.Name == name }) {
			r.problem("MACHINE_AUTOSCALE_BOUNDS has %s, which is neither in WORKER_CONNECTORS nor in MACHINE_ALLOWED_CONNECTORS; add it to one of them or drop its bounds", name)
		}
	}
}

// optionalDuration reads a duration where 0 or off means never.
func (r *reader) optionalDuration(key string, def time.Duration) time.Duration {
	s := strings.ToLower(r.str(key, ""))
	switch s {
	case "":
		return def
	case "0", "off", "never":
		return 0
	}
	return r.duration(key, def, fmt.Sprintf("a duration such as %s, or 0 for never", def))
}
