// Package migrate turns an old emp machine's configuration (the .env files its environment
// builder wrote, or the pm2-ecosystem.config.cjs its generator wrote) into this machine's
// configuration, and says what changes: old variables renamed, ignored or refused, defaults
// that differ, and the behaviour that is not the same.
package migrate

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/emp-job-queue/machine/core/config"
)

// Report is the migration of one old configuration.
type Report struct {
	Env     map[string]string   // the new configuration
	Notes   []config.LegacyNote // what became of each old variable that is not kept as it is
	Refused []string            // what must change before the machine starts, one sentence each
	Changes []string            // behaviour that differs from the old runtime
	PM2     []string            // how the old PM2 apps map to slots and services (from an ecosystem file)
	Kept    []string            // variables the old runtime did not read, kept as they are
	Problem error               // the new configuration does not load yet (config.Load's problems)
}

// ParseEnv reads an env file as the old environment builder writes it: KEY=value lines,
// values in single or double quotes when they hold spaces, commas or JSON, `export` allowed,
// # comments. name is for errors.
func ParseEnv(r io.Reader, name string) (map[string]string, error) {
	env := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		key, value, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" || strings.ContainsAny(key, " \t") {
			return nil, fmt.Errorf("%s line %d is not KEY=VALUE; fix or remove it", name, n)
		}
		value = strings.TrimSpace(value)
		switch {
		case len(value) >= 2 && (value[0] == '\'' || value[0] == '"') && value[len(value)-1] == value[0]:
			value = value[1 : len(value)-1]
		case len(value) > 0 && (value[0] == '\'' || value[0] == '"'):
			return nil, fmt.Errorf("%s line %d: the value of %s opens a quote it does not close", name, n, key)
		default:
			if i := strings.Index(value, " #"); i >= 0 {
				value = strings.TrimSpace(value[:i])
			}
		}
		env[key] = value
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return env, nil
}

// FromEnv migrates an old machine's environment.
func FromEnv(old map[string]string) *Report {
	rep := &Report{Env: map[string]string{}}
	lookup := func(k string) (string, bool) { v, ok := old[k]; return v, ok }
	for _, key := range slices.Sorted(maps.Keys(old)) {
		value := strings.TrimSpace(old[key])
		v, known := config.LookupOld(key)
		if !known {
			rep.Env[key] = value // a variable of this machine, or one the services use
			rep.Kept = append(rep.Kept, key)
			continue
		}
		switch v.Treatment {
		case config.Honoured:
			rep.Env[key] = value
		case config.Renamed:
			if nv, ok := config.OldValue(lookup, key); ok {
				if _, set := old[v.Replacement]; !set {
					rep.Env[v.Replacement] = nv
				}
			}
		case config.Refused:
			if v.RefusesValue(value) {
				rep.Refused = append(rep.Refused, v.Sentence(value))
			}
		}
	}
	for _, key := range slices.Sorted(maps.Keys(old)) {
		if v, known := config.LookupOld(key); known {
			if n, noted := v.NoteFor(strings.TrimSpace(old[key]), lookup); noted && n.Treatment != config.Refused {
				rep.Notes = append(rep.Notes, n)
			}
		}
	}
	rep.defaults(old)
	rep.Changes = append(rep.Changes, behaviour(old)...)
	if _, err := config.Load(func(k string) (string, bool) { v, ok := rep.Env[k]; return v, ok }); err != nil {
		rep.Problem = err
	}
	return rep
}

// defaults sets, in the new configuration, the old defaults that differ from the new ones, so
// the machine behaves as the old one did.
func (r *Report) defaults(old map[string]string) {
	if _, set := old["GPU_MODE"]; !set {
		r.Env["GPU_MODE"] = "actual"
		r.Changes = append(r.Changes, "GPU_MODE=actual is written out: it was the old default, where the new default auto falls back to simulated GPUs when no NVIDIA driver answers.")
	}
	switch strings.ToLower(firstSet(old, "CLOUD_STORAGE_PROVIDER", "CLOUD_PROVIDER")) {
	case "aws", "s3":
		if _, set := old["S3_ENDPOINT"]; !set {
			r.Env["S3_ENDPOINT"] = "s3.amazonaws.com"
			r.Changes = append(r.Changes, "S3_ENDPOINT=s3.amazonaws.com is written out for CLOUD_STORAGE_PROVIDER=aws: jobs whose ctx.storage.provider is aws or s3 upload there.")
		}
		if _, set := old["S3_SECRET_ACCESS_KEY"]; !set {
			r.Refused = append(r.Refused, "S3_SECRET_ACCESS_KEY is not set: give the decoded AWS secret key (AWS_SECRET_ACCESS_KEY_ENCODED is not read), or S3_SECRET_ACCESS_KEY_FILE, so the machine can upload to S3")
		}
	}
	workers := old["WORKERS"]
	if workers == "" {
		workers = old["WORKER_CONNECTORS"]
	}
	if workers == "" {
		r.Changes = append(r.Changes, "WORKERS is unset: the old generator then planned one simulation worker (a type its service mapping no longer had); this machine runs the simulation connector on every GPU. Set WORKER_CONNECTORS to what the machine should run.")
	}
	if strings.Contains(workers, "ollama") {
		if _, set := old["OLLAMA_INSTALL_METHOD"]; !set {
			r.Env["OLLAMA_INSTALL"] = "script"
			r.Changes = append(r.Changes, "OLLAMA_INSTALL=script is written out: the old entrypoint installed Ollama with its official script when it was missing; set OLLAMA_INSTALL=none where Ollama is in the image.")
		}
		if _, set := old["OLLAMA_DEFAULT_MODELS"]; !set {
			r.Changes = append(r.Changes, "OLLAMA_DEFAULT_MODELS is unset, so the machine pulls the old default models, llama3.2 and llama3.2:1b, at its first boot.")
		}
	}
}

// behaviour is what differs from the old runtime whatever the configuration.
func behaviour(old map[string]string) []string {
	id := old["MACHINE_ID"]
	if id == "" {
		id = "<MACHINE_ID>"
	}
	out := []string{
		"The machine id is MACHINE_ID as given (CONTAINER_NAME or the host name when unset), without the random 8-hex suffix the old runtime appended at every boot, so a restarted machine keeps its identity in machine:status.",
		fmt.Sprintf("One process replaces PM2 and its worker processes: each worker is a slot with the same id (%s-worker-<type>-<i>), claiming and running one job at a time.", id),
		"Slots wake at once on job_submitted; WORKER_POLL_INTERVAL_MS (POLL_INTERVAL_MS) is only a fallback, and the FUNCTION findMatchingJob no longer needs to be loaded: the claim is an EVALSHA script with the same matching rules that is not limited to the first 100 pending jobs.",
		"SIGTERM drains: running jobs get MACHINE_DRAIN_TIMEOUT to finish and the rest go back to jobs:pending without using a retry (the old worker failed them for good with \"Worker shutdown\").",
		"A machine that dies has its jobs run elsewhere once its leases expire (MACHINE_LEASE_SECONDS); the old runtime left them assigned.",
		"A retried job keeps its place in line and waits WORKER_RETRY_BACKOFF_SECONDS (doubling), going to another worker first; the old worker re-queued it at once below every new job of priority 10 or more.",
		"cancel_job is honoured: the running call is aborted and no later write resurrects the job.",
		"Services (ComfyUI, A1111, Ollama, the browser) are supervised by the machine: readiness probes gate their slots, restarts back off from 1 s to a minute, 10 short runs in a row mark a service errored, and memory_limit_mb restarts a service only between jobs.",
		"The health-server PM2 app is gone: /health, /status, /metrics and the rest are served on MACHINE_HEALTH_PORT by the machine itself.",
		"Not written any more: the attestation keys worker:completion:* and worker:failure:*, the progress:{id} stream, and the duplicate job_failed of retryable failures.",
	}
	return out
}
