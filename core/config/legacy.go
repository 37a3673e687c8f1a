package config

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// The old runtime (emp-job-queue's PM2 machine and its Node workers) read some 300 environment
// variables. Each one is classified here, once: honoured under its own name with the same
// meaning, renamed (read as the new variable, same meaning), ignored (no effect here; the note
// names what replaces it), or refused (a value this machine cannot honour: it will not start).
// `machine config validate` and `machine migrate` list what they find; docs/migration.md holds
// the whole table.

// Treatment is what the machine does with a variable of the old runtime.
type Treatment string

const (
	Honoured Treatment = "honoured" // read under its own name, with the same meaning
	Renamed  Treatment = "renamed"  // read as its new name, with the same meaning
	Ignored  Treatment = "ignored"  // no effect here; the note says what replaces it
	Refused  Treatment = "refused"  // a value the machine cannot honour: it refuses to start
)

// OldVariable is one variable of the old runtime and what became of it.
type OldVariable struct {
	Name      string
	Treatment Treatment
	// Replacement is the new variable (renamed), or what takes the old one's place.
	Replacement string
	// Note says why, in one sentence fragment.
	Note string

	refuseIf func(value string) bool           // refused only for such values (nil: any value)
	convert  func(value string) (string, bool) // renamed: old value → new value
	when     func(env Lookup) bool             // renamed: applies only when true
	caps     func(value string) (string, any)  // honoured as a claim capability key
}

// LegacyNote says what happened to one old variable found in the environment.
type LegacyNote struct {
	Var       string
	Treatment Treatment
	Sentence  string
}

// RefusesValue reports whether the machine refuses to start with this value of the variable.
func (v OldVariable) RefusesValue(value string) bool {
	return v.Treatment == Refused && (v.refuseIf == nil || v.refuseIf(value))
}

// NoteFor says what becomes of the old variable with this value in env; noted is false for a
// variable honoured as it is.
func (v OldVariable) NoteFor(value string, env Lookup) (note LegacyNote, noted bool) {
	switch {
	case v.Treatment == Honoured:
		return LegacyNote{}, false
	case v.Treatment == Renamed && v.when != nil && !v.when(env):
		return LegacyNote{v.Name, Ignored, fmt.Sprintf("%s is ignored: it was %s, and GPU_MODE is not mock; set %s to override the detected count", v.Name, v.Note, v.Replacement)}, true
	case v.Treatment == Refused && !v.RefusesValue(value):
		return LegacyNote{v.Name, Ignored, v.Sentence(value)}, true
	}
	return LegacyNote{v.Name, v.Treatment, v.Sentence(value)}, true
}

// Sentence is the one sentence said about the variable with this value.
func (v OldVariable) Sentence(value string) string {
	switch v.Treatment {
	case Renamed:
		return fmt.Sprintf("%s is the old name of %s and is read as %s (%s); rename it", v.Name, v.Replacement, v.Replacement, v.Note)
	case Ignored:
		return fmt.Sprintf("%s is ignored: %s", v.Name, v.Note)
	case Refused:
		if v.refuseIf == nil { // refused whatever its value, which may be a secret: not shown
			return fmt.Sprintf("%s cannot be honoured: %s", v.Name, v.Note)
		}
		if !v.refuseIf(value) {
			return fmt.Sprintf("%s=%s is ignored: it asks for what this machine does anyway (%s)", v.Name, value, v.Note)
		}
		return fmt.Sprintf("%s=%s cannot be honoured: %s", v.Name, value, v.Note)
	}
	return fmt.Sprintf("%s is honoured: %s", v.Name, v.Note)
}

func honoured(note string) OldVariable { return OldVariable{Treatment: Honoured, Note: note} }
func ignored(note string) OldVariable  { return OldVariable{Treatment: Ignored, Note: note} }
func renamed(to, note string) OldVariable {
	return OldVariable{Treatment: Renamed, Replacement: to, Note: note}
}
func refused(note string, refuseIf func(string) bool) OldVariable {
	return OldVariable{Treatment: Refused, Note: note, refuseIf: refuseIf}
}

// capability is an old WORKER_* variable the old worker put into its claim capabilities under
// key; this machine advertises it the same way (WORKER_CAPABILITIES wins on a clash).
func capability(key, kind string) OldVariable {
	v := honoured("advertised as the claim capability " + key + ", as the old worker did")
	v.caps = func(s string) (string, any) {
		switch kind {
		case "list":
			return key, parseList(s)
		case "bool":
			return key, s == "true"
		case "int":
			n, err := strconv.Atoi(s)
			if err != nil {
				return key, nil
			}
			return key, n
		}
		return key, s
	}
	return v
}

func parseList(s string) []string {
	var out []string
	if strings.HasPrefix(s, "[") && json.Unmarshal([]byte(s), &out) == nil {
		return out
	}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func notEqual(want string) func(string) bool {
	return func(v string) bool { return strings.TrimSpace(strings.ToLower(v)) != want }
}

func msToSeconds(v string) (string, bool) {
	ms, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return "", false
	}
	return strconv.FormatFloat(ms/1000, 'f', -1, 64), true
}

func mockGPUs(env Lookup) bool {
	v, _ := env("GPU_MODE")
	return strings.EqualFold(strings.TrimSpace(v), "mock")
}

// OldVariables returns every variable of the old runtime with its treatment, sorted by name.
func OldVariables() []OldVariable {
	out := make([]OldVariable, 0, len(oldVariables))
	for name, v := range oldVariables {
		v.Name = name
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b OldVariable) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// LookupOld returns the treatment of one old variable.
func LookupOld(name string) (OldVariable, bool) {
	v, ok := oldVariables[name]
	v.Name = name
	return v, ok
}

// renamedTo lists, for each new variable, the old names read in its place, sorted.
var renamedTo = func() map[string][]string {
	m := map[string][]string{}
	for name, v := range oldVariables {
		if v.Treatment == Renamed {
			m[v.Replacement] = append(m[v.Replacement], name)
		}
	}
	for _, names := range m {
		slices.Sort(names)
	}
	return m
}()

// withOldNames reads a new variable under its old names when it is unset itself.
func withOldNames(env Lookup) Lookup {
	return func(key string) (string, bool) {
		if v, ok := env(key); ok && strings.TrimSpace(v) != "" {
			return v, ok
		}
		for _, old := range renamedTo[key] {
			if v, ok := oldValue(env, old); ok {
				return v, true
			}
		}
		return env(key)
	}
}

// OldValue is the value of the new variable an old renamed one stands for, when it applies
// (NUM_GPUS only with GPU_MODE=mock) and its value converts (milliseconds to seconds).
func OldValue(env Lookup, name string) (string, bool) { return oldValue(env, name) }

func oldValue(env Lookup, name string) (string, bool) {
	ov := oldVariables[name]
	v, ok := env(name)
	if !ok || strings.TrimSpace(v) == "" || (ov.when != nil && !ov.when(env)) {
		return "", false
	}
	if ov.convert != nil {
		return ov.convert(strings.TrimSpace(v))
	}
	return strings.TrimSpace(v), true
}

// legacy notes every old variable set in the environment, refuses the values the machine
// cannot honour, reports old and new names that disagree, and advertises the old worker's
// capability variables.
func (r *reader) legacy(raw Lookup, c *Config) {
	for _, v := range OldVariables() {
		if v.caps != nil { // read under its old names too (WORKER_DEBUGGING_ENABLED → DEBUGGING_ENABLED)
			if s := r.str(v.Name, ""); s != "" {
				if key, val := v.caps(s); val != nil {
					c.addCapability(key, val)
				}
			}
		}
		value, ok := raw(v.Name)
		value = strings.TrimSpace(value)
		if !ok || value == "" {
			continue
		}
		note, noted := v.NoteFor(value, raw)
		if !noted {
			continue
		}
		c.Legacy = append(c.Legacy, note)
		switch note.Treatment {
		case Refused:
			r.problem("%s", note.Sentence)
		case Renamed:
			if nv, set := raw(v.Replacement); set && strings.TrimSpace(nv) != "" {
				if conv, _ := oldValue(raw, v.Name); conv != strings.TrimSpace(nv) {
					r.problem("%s and %s disagree; %s is the old name of %s, so set only %s", v.Name, v.Replacement, v.Name, v.Replacement, v.Replacement)
				}
			} else if _, ok := oldValue(raw, v.Name); !ok {
				r.problem("%s=%q is not valid; set %s instead (%s)", v.Name, value, v.Replacement, v.Note)
			}
		}
	}
	if region := r.str("WORKER_REGION", ""); region != "" {
		loc := map[string]any{"region": region, "compliance_zones": parseList(r.str("WORKER_COMPLIANCE", ""))}
		if loc["compliance_zones"] == nil {
			loc["compliance_zones"] = []string{}
		}
		if s := r.str("WORKER_COUNTRY", ""); s != "" {
			loc["country"] = s
		}
		if s := r.str("WORKER_DATA_RESIDENCY", ""); s != "" {
			loc["data_residency_requirements"] = parseList(s)
		}
		c.addCapability("location", loc)
	}
	if tier := r.str("WORKER_COST_TIER", ""); tier != "" {
		cost := map[string]any{"tier": tier}
		for key, name := range map[string]string{"rate_per_hour": "WORKER_RATE_PER_HOUR", "rate_per_job": "WORKER_RATE_PER_JOB", "minimum_charge": "WORKER_MINIMUM_CHARGE"} {
			if s := r.str(name, ""); s != "" {
				cost[key] = r.float(name, 0, "a number such as 0.5")
			}
		}
		c.addCapability("cost", cost)
	}
}

// addCapability advertises an old worker's capability key, unless WORKER_CAPABILITIES has it.
func (c *Config) addCapability(key string, v any) {
	if _, taken := c.CustomCapabilities[key]; taken {
		return
	}
	if c.CustomCapabilities == nil {
		c.CustomCapabilities = map[string]any{}
	}
	c.CustomCapabilities[key] = v
}
