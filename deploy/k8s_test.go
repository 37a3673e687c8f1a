package deploy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/emp-job-queue/machine/core/config"
)

// kustomization is the part of kustomize's Kustomization the manifests use.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
	} `json:"labels"`
	Images []struct{ Name, NewName, NewTag string } `json:"images"`
}

// serviceMonitor is the Prometheus operator's ServiceMonitor, as much of it as is used.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port, Path, Interval string
		} `json:"endpoints"`
	} `json:"spec"`
}

// manifests are every object of deploy/k8s, decoded strictly into its typed struct.
type manifests struct {
	kust      kustomization
	ns        *corev1.Namespace
	sa        *corev1.ServiceAccount
	cm        *corev1.ConfigMap
	secret    *corev1.Secret
	sts       *appsv1.StatefulSet
	svc       *corev1.Service
	pdb       *policyv1.PodDisruptionBudget
	monitor   *serviceMonitor
	filesRead []string
}

func strict(data []byte, into any) error { return yaml.UnmarshalStrict(data, into) }

func loadManifests(t *testing.T) manifests {
	t.Helper()
	dir := filepath.Join("k8s")
	var m manifests
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := strict(data, &m.kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			if err := m.decode([]byte(doc)); err != nil {
				t.Fatalf("%s, document %d: %v", f, i+1, err)
			}
		}
		m.filesRead = append(m.filesRead, filepath.Base(f))
	}
	return m
}

func (m *manifests) decode(doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	var into any
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Namespace":
		m.ns = &corev1.Namespace{}
		into = m.ns
	case "v1 ServiceAccount":
		m.sa = &corev1.ServiceAccount{}
		into = m.sa
	case "v1 ConfigMap":
		m.cm = &corev1.ConfigMap{}
		into = m.cm
	case "v1 Secret":
		m.secret = &corev1.Secret{}
		into = m.secret
	case "apps/v1 StatefulSet":
		m.sts = &appsv1.StatefulSet{}
		into = m.sts
	case "v1 Service":
		m.svc = &corev1.Service{}
		into = m.svc
	case "policy/v1 PodDisruptionBudget":
		m.pdb = &policyv1.PodDisruptionBudget{}
		into = m.pdb
	case "monitoring.coreos.com/v1 ServiceMonitor":
		m.monitor = &serviceMonitor{}
		into = m.monitor
	default:
		return fmt.Errorf("unexpected %s %s; add its typed struct to this test", tm.APIVersion, tm.Kind)
	}
	return strict(doc, into)
}

// probeTarget returns a probe's HTTP path and the container port it reaches.
func probeTarget(p *corev1.Probe, c corev1.Container) (string, int32) {
	if p == nil || p.HTTPGet == nil {
		return "", 0
	}
	port := p.HTTPGet.Port.IntVal
	for _, cp := range c.Ports {
		if p.HTTPGet.Port.StrVal != "" && cp.Name == p.HTTPGet.Port.StrVal {
			port = cp.ContainerPort
		}
	}
	return p.HTTPGet.Path, port
}

var secretName = regexp.MustCompile(`(_API_KEY|_API_TOKEN|_SECRET_ACCESS_KEY|^HUB_REDIS_URL|^REDIS_URL|^MACHINE_API_TOKEN)$`)

// The Kubernetes manifests, decoded strictly into the API's own types (a misspelt field fails),
// keep the machine's promises: GPUs requested, liveness on /health and readiness on /ready at
// the machine's port, a preStop drain inside a grace period longer than two drain timeouts,
// secrets only from a Secret, MACHINE_ID from the pod's name, a disruption budget, and a port
// named metrics for a ServiceMonitor.
func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	for _, r := range m.kust.Resources {
		if !slices.Contains(m.filesRead, r) {
			t.Errorf("kustomization lists %s, which is not in deploy/k8s", r)
		}
	}
	for _, f := range m.filesRead {
		if !slices.Contains(m.kust.Resources, f) && f != "secret.example.yaml" && f != "servicemonitor.yaml" {
			t.Errorf("%s is in deploy/k8s but not in the kustomization", f)
		}
	}
	if m.sts == nil || m.cm == nil || m.svc == nil || m.pdb == nil || m.monitor == nil || m.sa == nil {
		t.Fatal("want a StatefulSet, ConfigMap, Service, PodDisruptionBudget, ServiceMonitor and ServiceAccount")
	}
	spec := m.sts.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	podLabels := labels.Set(m.sts.Spec.Template.Labels)
	for what, sel := range map[string]*metav1.LabelSelector{"StatefulSet": m.sts.Spec.Selector, "PodDisruptionBudget": m.pdb.Spec.Selector} {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil || s.Empty() || !s.Matches(podLabels) {
			t.Errorf("the %s's selector %v does not select the pods %v", what, sel, podLabels)
		}
	}
	if !labels.SelectorFromSet(m.svc.Spec.Selector).Matches(podLabels) {
		t.Errorf("the Service selects %v, not the pods", m.svc.Spec.Selector)
	}
	if s, _ := metav1.LabelSelectorAsSelector(&m.monitor.Spec.Selector); !s.Matches(labels.Set(m.svc.Labels)) {
		t.Errorf("the ServiceMonitor does not select the Service")
	}
	if m.pdb.Spec.MaxUnavailable == nil || m.pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("the PodDisruptionBudget should let one machine go at a time")
	}

	// GPUs and resource names.
	gpu := corev1.ResourceName("nvidia.com/gpu")
	req, lim := c.Resources.Requests[gpu], c.Resources.Limits[gpu]
	if req.Cmp(resource.MustParse("1")) < 0 || req.Cmp(lim) != 0 {
		t.Errorf("nvidia.com/gpu: request %s, limit %s; want at least 1, equal (an extended resource)", req.String(), lim.String())
	}
	for _, list := range []corev1.ResourceList{c.Resources.Requests, c.Resources.Limits} {
		for name := range list {
			if !slices.Contains([]corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage, gpu}, name) {
				t.Errorf("unknown resource name %q", name)
			}
		}
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tol corev1.Toleration) bool { return tol.Key == string(gpu) }) {
		t.Error("no toleration for the nvidia.com/gpu taint of GPU nodes")
	}

	// The configuration the pod sees: the image's ENV, the ConfigMap, the env, secrets filled.
	image := ""
	for _, img := range m.kust.Images {
		if img.Name == c.Image {
			image = img.NewTag
		}
	}
	if !slices.Contains(dockerStages(t), image) {
		t.Fatalf("the kustomization's image tag %q is not a Dockerfile target", image)
	}
	env := imageEnv(t, image)
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil || from.ConfigMapRef.Name != m.cm.Name {
			t.Errorf("envFrom %+v is not the ConfigMap %s", from, m.cm.Name)
		}
	}
	for k, v := range m.cm.Data {
		if secretName.MatchString(k) {
			t.Errorf("secret %s is in the ConfigMap; it belongs in the Secret", k)
		}
		env[k] = v
	}
	for _, e := range c.Env {
		switch {
		case e.Name == "MACHINE_ID":
			if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
				t.Errorf("MACHINE_ID must come from the pod's name (fieldRef metadata.name), got %+v", e)
			}
			env[e.Name] = m.sts.Name + "-0"
		case secretName.MatchString(e.Name):
			if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != m.secret.Name {
				t.Errorf("%s must come from the Secret %s, got %+v", e.Name, m.secret.Name, e)
			} else if _, ok := m.secret.StringData[e.ValueFrom.SecretKeyRef.Key]; !ok {
				t.Errorf("%s reads key %s, which the example Secret does not have", e.Name, e.ValueFrom.SecretKeyRef.Key)
			}
			env[e.Name] = dummySecret(e.Name)
		default:
			env[e.Name] = e.Value
		}
	}
	if _, ok := env["HUB_REDIS_URL"]; !ok {
		t.Error("HUB_REDIS_URL is not set from the Secret: the pods would each run an embedded broker")
	}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("the pod's configuration is invalid: %v", err)
	}

	// Probes on the machine's own port.
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"startup", c.StartupProbe, "/health"}, {"liveness", c.LivenessProbe, "/health"}, {"readiness", c.ReadinessProbe, "/ready"}} {
		path, port := probeTarget(p.probe, c)
		if path != p.path || int(port) != cfg.HealthPort {
			t.Errorf("%s probe asks %s on port %d; want %s on MACHINE_HEALTH_PORT %d", p.name, path, port, p.path, cfg.HealthPort)
		}
	}
	if c.StartupProbe != nil && float64(c.StartupProbe.PeriodSeconds*c.StartupProbe.FailureThreshold) < cfg.InstallTimeout.Seconds() {
		t.Errorf("the startup probe gives up after %d s, before SERVICE_INSTALL_TIMEOUT %s", c.StartupProbe.PeriodSeconds*c.StartupProbe.FailureThreshold, cfg.InstallTimeout)
	}
	metricsPort := slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" })
	if metricsPort < 0 || int(c.Ports[metricsPort].ContainerPort) != cfg.HealthPort {
		t.Errorf("want a container port named metrics on MACHINE_HEALTH_PORT %d", cfg.HealthPort)
	}
	if len(m.svc.Spec.Ports) != 1 || m.svc.Spec.Ports[0].Name != "metrics" || m.svc.Spec.Ports[0].TargetPort.StrVal != "metrics" {
		t.Errorf("the Service must expose the port named metrics: %+v", m.svc.Spec.Ports)
	}
	if len(m.monitor.Spec.Endpoints) != 1 || m.monitor.Spec.Endpoints[0].Port != "metrics" || m.monitor.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("the ServiceMonitor must scrape /metrics on the port named metrics: %+v", m.monitor.Spec.Endpoints)
	}

	// Drain: preStop waits for jobs in flight, inside the grace period.
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil ||
		!slices.Equal(c.Lifecycle.PreStop.Exec.Command[:3], []string{"/usr/local/bin/machine", "drain", "--wait"}) {
		t.Fatalf("want a preStop hook running machine drain --wait, got %+v", c.Lifecycle)
	}
	var grace int64
	if spec.TerminationGracePeriodSeconds != nil {
		grace = *spec.TerminationGracePeriodSeconds
	}
	if float64(grace) <= 2*cfg.DrainTimeout.Seconds() {
		t.Errorf("terminationGracePeriodSeconds %d must exceed preStop's wait plus SIGTERM's drain: 2 × MACHINE_DRAIN_TIMEOUT (%s)", grace, cfg.DrainTimeout)
	}

	// The image's user, and volumes that exist.
	dockerfile, _ := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	uid := regexp.MustCompile(`useradd --uid (\d+)`).FindSubmatch(dockerfile)
	sc := spec.SecurityContext
	if uid == nil || sc == nil || sc.RunAsUser == nil || fmt.Sprint(*sc.RunAsUser) != string(uid[1]) || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("the pod must run as the image's user %s, non-root", uid[1])
	}
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = true
	}
	for _, v := range m.sts.Spec.VolumeClaimTemplates {
		volumes[v.Name] = true
	}
	for _, vm := range c.VolumeMounts {
		if !volumes[vm.Name] {
			t.Errorf("volume mount %s has no volume", vm.Name)
		}
		if vm.MountPath == cfg.Workspace && strings.HasPrefix(cfg.ComfyUI.Dir, cfg.Workspace+"/") {
			t.Errorf("the workspace volume at %s would hide the image's ComfyUI at %s", vm.MountPath, cfg.ComfyUI.Dir)
		}
	}
}
