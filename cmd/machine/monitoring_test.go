package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"github.com/emp-job-queue/machine/internal/testutil"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/internal/promrules"
	"github.com/emp-job-queue/machine/internal/redistest"
)

// monitoredMetrics are the metric names deploy/monitoring's alert rules and dashboard query.
func monitoredMetrics(t *testing.T) []string {
	t.Helper()
	var exprs []string
	data, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "monitoring", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	groups, err := promrules.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	data, err = os.ReadFile(filepath.Join(repoRoot, "deploy", "monitoring", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct{ Targets []struct{ Expr string } }
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			exprs = append(exprs, strings.ReplaceAll(q.Expr, "$__rate_interval", "1m"))
		}
	}
	var names []string
	for _, e := range exprs {
		n, err := promrules.MetricNames(e)
		if err != nil {
			t.Fatalf("%q: %v", e, err)
		}
		for _, name := range n {
			if !slices.Contains(names, name) && name != "up" { // up is Prometheus's own
				names = append(names, name)
			}
		}
	}
	return names
}

// A running machine, with a supervised service and after a job, serves on /metrics every
// metric the alert rules and the dashboard use.
func TestMetricsTheMonitoringUsesAreServed(t *testing.T) {
	srv := redistest.Start(t)
	dir := t.TempDir()
	svcPort := testutil.Port(t)
	file := filepath.Join(dir, "services.json")
	defs := fmt.Sprintf(`[{"name":"sidecar","command":[%q],"port":%d,"probe":{"kind":"http","target":"http://127.0.0.1:%d/"}}]`,
		testService, svcPort, svcPort)
	if err := os.WriteFile(file, []byte(defs), 0o600); err != nil {
		t.Fatal(err)
	}
	catalog := filepath.Join(dir, "models.json") // the model cache's metrics exist only with a cache
	if err := os.WriteFile(catalog, []byte(`{"models":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HUB_REDIS_URL": srv.URL, "MACHINE_ID": "box", "WORKER_CONNECTORS": "simulation:1",
		"MACHINE_RUN_DIR": filepath.Join(dir, "run"), "MACHINE_LOG_DIR": filepath.Join(dir, "logs"), "MACHINE_SERVICES_FILE": file,
		"MACHINE_MODEL_CACHE_GB": "1", "MACHINE_MODEL_CATALOG": catalog, "MACHINE_MODEL_CACHE_DIR": filepath.Join(dir, "models")}
	p := startMachine(t, env)
	submit(t, env, "--payload", `{"duration_ms":10,"steps":1}`)
	waitUntil(t, "the job to complete", func() bool { return completed(p.status(t)) == 1 })
	want := monitoredMetrics(t)
	var missing []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, body := httpDo(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/metrics", p.Port))
		var served []string
		sc := bufio.NewScanner(strings.NewReader(body))
		for sc.Scan() {
			if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
				served = append(served, strings.FieldsFunc(line, func(r rune) bool { return r == '{' || r == ' ' })[0])
			}
		}
		missing = missing[:0]
		for _, n := range want {
			if !slices.Contains(served, n) {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(missing) > 0 {
		t.Errorf("the monitoring uses metrics the machine does not serve: %v", missing)
	}
	if len(want) < 10 {
		t.Errorf("only %d metrics found in deploy/monitoring: %v", len(want), want)
	}
}
