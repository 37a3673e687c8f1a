package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/emp-job-queue/machine/core/metrics"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/core/supervisor"
	"github.com/emp-job-queue/machine/gpu"
	"github.com/emp-job-queue/machine/internal/promrules"
)

// prometheusOwn are series Prometheus makes itself for every target.
var prometheusOwn = []string{"up"}

// exported builds the machine's metrics registry, feeds every collector through the code the
// machine uses (a fake GPU's reading, the state store's snapshot, a job), and returns the metric
// names a scrape shows, with the _bucket, _sum and _count series of histograms.
func exported(t *testing.T) []string {
	t.Helper()
	m := metrics.New()
	src := gpu.NewFake(1, "", 24)
	readings, err := src.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m.ObserveTelemetry(gpu.Snapshot{GPUs: readings, Host: gpu.HostReading{CPUPercent: 1, MemUsedMB: 1, MemTotalMB: 2, DiskUsedGB: 1, DiskTotalGB: 2},
		Services: []gpu.ServiceReading{{Name: "comfyui-gpu0", RSSMB: 1, CPUPercent: 1}}})
	m.ObserveState(func() state.Snapshot {
		return state.Snapshot{Slots: []state.Slot{{Connector: "mock", Status: state.SlotIdle}},
			Services:   []state.Service{{Name: "comfyui-gpu0", State: string(supervisor.Ready)}},
			ModelCache: state.ModelCache{On: true}}
	})
	m.Jobs.WithLabelValues("mock", "completed").Inc()
	m.JobDuration.WithLabelValues("mock").Observe(1)
	m.ClaimTime.Observe(0.001)
	m.SlotsBusy.WithLabelValues("mock").Set(0)
	m.BrokerUp.Set(1)
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := slices.Clone(prometheusOwn)
	for _, f := range families {
		names = append(names, f.GetName())
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM:
			names = append(names, f.GetName()+"_bucket", f.GetName()+"_sum", f.GetName()+"_count")
		case dto.MetricType_SUMMARY:
			names = append(names, f.GetName()+"_sum", f.GetName()+"_count")
		}
	}
	return names
}

// dashboard is the part of Grafana's dashboard model the checked-in dashboard uses, decoded
// strictly: a misspelt field fails the test instead of vanishing in Grafana.
type dashboard struct {
	Title, UID, Description, Timezone, Refresh string
	Tags                                       []string
	SchemaVersion, Version                     int
	Editable                                   bool
	Time                                       struct{ From, To string }
	Templating                                 struct {
		List []struct {
			Name, Label, Type, AllValue string
			Query                       string
			Datasource                  *datasource
			Current                     map[string]any
			Refresh, Hide               int
			Multi, IncludeAll           bool
		}
	}
	Annotations struct{ List []any }
	Panels      []struct {
		ID          int
		Type, Title string
		Description string
		Datasource  datasource
		GridPos     struct{ X, Y, W, H int }
		FieldConfig *struct {
			Defaults  struct{ Unit string }
			Overrides []any
		}
		Targets []struct{ RefID, Expr, LegendFormat string }
	}
}

type datasource struct{ Type, UID string }

func strictJSON(data []byte, into any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(into)
}

// grafanaVariables are Grafana's own variables, replaced as Grafana would before PromQL sees them.
var grafanaVariables = strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m")

// The alert rules load with Prometheus's own parser, cover what must page someone, and, with
// the dashboard's queries, name only metrics the machine exports.
func TestMonitoring(t *testing.T) {
	have := exported(t)
	check := func(where, expr string) {
		names, err := promrules.MetricNames(expr)
		if err != nil {
			t.Errorf("%s: %q is not PromQL: %v", where, expr, err)
			return
		}
		if len(names) == 0 {
			t.Errorf("%s: %q names no metric", where, expr)
		}
		for _, n := range names {
			if !slices.Contains(have, n) {
				t.Errorf("%s uses %s, which the machine does not export", where, n)
			}
		}
	}

	data, err := os.ReadFile(filepath.Join("monitoring", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	groups, err := promrules.Parse(data)
	if err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	var alerts []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if sev := r.Labels["severity"]; sev != "critical" && sev != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", r.Alert, sev)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s needs a summary and a description saying what to do", r.Alert)
			}
			check("alert "+r.Alert, r.Expr)
		}
	}
	for _, want := range []string{"MachineDown", "BrokerDown", "GPUUnhealthy", "ServiceCrashLooping", "ServiceErrored", "QueueGrowingWhileSlotsIdle", "JobsFailing"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s (have %v)", want, alerts)
		}
	}

	data, err = os.ReadFile(filepath.Join("monitoring", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := strictJSON(data, &d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	if d.UID == "" || len(d.Panels) < 10 {
		t.Fatalf("dashboard %q has %d panels", d.UID, len(d.Panels))
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q needs queries on the ${datasource} variable", p.Title)
		}
		for _, q := range p.Targets {
			check("panel "+p.Title, grafanaVariables.Replace(q.Expr))
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			check("variable "+v.Name, strings.TrimSuffix(strings.TrimPrefix(v.Query, "label_values("), ", instance)"))
		}
	}
}

// The checks fail on a metric the machine does not export.
func TestMonitoringCatchesUnknownMetrics(t *testing.T) {
	names, err := promrules.MetricNames(`rate(machine_jobs_totl[5m]) > 0 and on (instance) up == 1`)
	if err != nil || !slices.Equal(names, []string{"machine_jobs_totl", "up"}) {
		t.Fatalf("MetricNames = %v, %v", names, err)
	}
	if slices.Contains(exported(t), "machine_jobs_totl") {
		t.Fatal("a misspelt metric counts as exported")
	}
	if _, err := promrules.Parse([]byte("groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: up ==\n")); err == nil {
		t.Fatal("a broken expression loaded")
	}
	if _, err := promrules.Parse([]byte("groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: up\n        fore: 5m\n")); err == nil {
		t.Fatal("a misspelt field loaded")
	}
}
