package migrate

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Ecosystem is the PM2 ecosystem file the old generator wrote:
// `module.exports = {"apps": [...], "servicePairs": [...]};`.
type Ecosystem struct {
	Apps         []App         `json:"apps"`
	ServicePairs []ServicePair `json:"servicePairs"`
}

// App is one PM2 app.
type App struct {
	Name             string            `json:"name"`
	Script           string            `json:"script"`
	Args             []string          `json:"args"`
	Env              map[string]string `json:"env"`
	MaxMemoryRestart string            `json:"max_memory_restart"`
	MaxRestarts      int               `json:"max_restarts"`
	MinUptime        string            `json:"min_uptime"`
	RestartDelay     int               `json:"restart_delay"`
}

// ServicePair is a service app and the worker app that waited for it.
type ServicePair struct {
	Service     string `json:"service"`
	Worker      string `json:"worker"`
	ServiceType string `json:"serviceType"`
	Port        int    `json:"port"`
}

// ParseEcosystem reads an ecosystem file in the form the old generator writes it (JSON after
// `module.exports =`). name is for errors.
func ParseEcosystem(r io.Reader, name string) (*Ecosystem, error) {
	b, err := io.ReadAll(io.LimitReader(r, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	s := strings.TrimSpace(string(b))
	s = strings.TrimPrefix(s, "module.exports")
	s = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(s), "="))
	s = strings.TrimSuffix(s, ";")
	var eco Ecosystem
	dec := json.NewDecoder(strings.NewReader(s))
	if err := dec.Decode(&eco); err != nil {
		return nil, fmt.Errorf("%s is not the ecosystem file the old generator writes (module.exports = {JSON};): %v; give the machine's .env files with --from-env instead", name, err)
	}
	if len(eco.Apps) == 0 {
		return nil, fmt.Errorf("%s has no apps; is it the machine's /workspace/pm2-ecosystem.config.cjs?", name)
	}
	return &eco, nil
}

var (
	workerApp = regexp.MustCompile(`^redis-worker-(.+?)-(gpu)?(\d+)$`)
	idSuffix  = regexp.MustCompile(`-[0-9a-f]{8}$`)
)

// generatorSet are the variables the old generator (or the container) set in every app's
// environment: they are not the machine's configuration.
var generatorSet = []string{"NODE_ENV", "LOG_LEVEL", "PATH", "HOME", "PWD", "OLDPWD", "SHLVL", "_", "HOSTNAME", "TERM", "USER",
	"YARN_VERSION", "NODE_VERSION", "LANG", "SERVICE_MANAGER_PATH"}

// FromEcosystem migrates the machine an ecosystem file describes: its environment (what every
// app shares: the generator passed the whole environment on), its workers and services.
func FromEcosystem(eco *Ecosystem) *Report {
	env := map[string]string{}
	for k, v := range eco.Apps[0].Env {
		env[k] = v
	}
	for _, app := range eco.Apps[1:] {
		for k, v := range env {
			if app.Env[k] != v {
				delete(env, k)
			}
		}
	}
	for _, k := range generatorSet {
		delete(env, k)
	}
	var pm2 []string
	if id := env["MACHINE_ID"]; idSuffix.MatchString(id) {
		env["MACHINE_ID"] = idSuffix.ReplaceAllString(id, "")
		pm2 = append(pm2, fmt.Sprintf("MACHINE_ID %s carries the random suffix the old runtime appended at boot: the new MACHINE_ID is %s, stable across restarts.", id, env["MACHINE_ID"]))
	}

	counts := map[string]int{}
	var types []string
	for _, app := range eco.Apps {
		m := workerApp.FindStringSubmatch(app.Name)
		switch {
		case app.Name == "health-server":
			pm2 = append(pm2, "PM2 app health-server → gone: the machine serves /health, /status and /metrics itself on MACHINE_HEALTH_PORT.")
		case m != nil:
			if counts[m[1]] == 0 {
				types = append(types, m[1])
			}
			counts[m[1]]++
			i, _ := strconv.Atoi(m[3])
			pm2 = append(pm2, fmt.Sprintf("PM2 app %s (%s) → slot %s-worker-%s-%d in the machine's process (PM2's max_memory_restart has no counterpart for a slot, whose memory is the machine's).",
				app.Name, restartPolicy(app), env["MACHINE_ID"], m[1], i))
		default:
			pm2 = append(pm2, fmt.Sprintf("PM2 app %s (%s) → service %s, installed and supervised by the machine: restarts wait 1 s × 1.5ⁿ up to a minute, 10 runs shorter than a minute in a row mark it errored (POST /restart/service brings it back).",
				app.Name, restartPolicy(app), app.Name))
		}
	}
	for _, p := range eco.ServicePairs {
		pm2 = append(pm2, fmt.Sprintf("servicePair %s ↔ %s → the slot claims only while %s answers its readiness probe (the old orchestrator polled port %d once, for 60 s).",
			p.Worker, p.Service, p.Service, p.Port))
	}
	var spec []string
	for _, t := range types {
		spec = append(spec, fmt.Sprintf("%s:%d", t, counts[t]))
	}
	if env["WORKERS"] == "" && env["WORKER_CONNECTORS"] == "" && len(spec) > 0 {
		env["WORKERS"] = strings.Join(spec, ",")
	} else if len(spec) > 0 {
		pm2 = append(pm2, fmt.Sprintf("The old generator ran these workers for WORKERS=%s: %s. WORKER_CONNECTORS keeps the old spec (auto counts are resolved again from the GPUs found).",
			firstSet(env, "WORKERS", "WORKER_CONNECTORS"), strings.Join(spec, ",")))
	}
	rep := FromEnv(env)
	rep.PM2 = pm2
	return rep
}

func firstSet(env map[string]string, keys ...string) string {
	for _, k := range keys {
		if v := env[k]; v != "" {
			return v
		}
	}
	return ""
}

func restartPolicy(a App) string {
	var parts []string
	if a.MaxRestarts > 0 {
		parts = append(parts, "max_restarts "+strconv.Itoa(a.MaxRestarts))
	}
	if a.MinUptime != "" {
		parts = append(parts, "min_uptime "+a.MinUptime)
	}
	if a.RestartDelay > 0 {
		parts = append(parts, "restart_delay "+strconv.Itoa(a.RestartDelay)+" ms")
	}
	if a.MaxMemoryRestart != "" {
		parts = append(parts, "max_memory_restart "+a.MaxMemoryRestart)
	}
	if len(parts) == 0 {
		return "PM2 defaults"
	}
	return strings.Join(parts, ", ")
}

// Keys returns the new configuration's variables, sorted.
func (r *Report) Keys() []string { return slices.Sorted(maps.Keys(r.Env)) }
