package main

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/installers/layer"
	"github.com/emp-job-queue/machine/internal/dockerfile"
)

const repoRoot = "../.."

// imageTargets are the Dockerfile's targets and the service layers each must hold.
var imageTargets = map[string][]string{
	"api": nil, "base": nil, "comfyui": {"comfyui"}, "browser": {"browser", "p5"}, "unified": {"comfyui", "browser", "p5"},
}

func sortedTargets() []string {
	var out []string
	for t := range imageTargets {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// dockerPath is the PATH a stage's commands see: the stage's ENV, else Docker's default.
func dockerPath(s *dockerfile.Stage) []string {
	p := s.Env["PATH"]
	if p == "" {
		p = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	return strings.Split(p, ":")
}

// checkDockerfile lists every problem of the Dockerfile, one sentence each.
func checkDockerfile(d *dockerfile.File, root string) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	pins := map[string]string{"GO_VERSION": `^\d+\.\d+(\.\d+)?$`, "DEBIAN_IMAGE": `^debian:[a-z]+`, "CUDA_VERSION": `^\d+-\d+$`,
		"COMFYUI_COMMIT": `^[0-9a-f]{40}$`, "P5_VERSION": `^\d+\.\d+\.\d+$`, "P5_SHA256": `^[0-9a-f]{64}$`}
	for arg, pattern := range pins {
		if v := d.MetaArgs[arg]; !regexp.MustCompile(pattern).MatchString(v) {
			bad("build arg %s=%q is not pinned (want %s)", arg, v, pattern)
		}
	}
	goMod, _ := os.ReadFile(filepath.Join(root, "go.mod"))
	if m := regexp.MustCompile(`(?m)^go (\S+)`).FindSubmatch(goMod); m == nil || d.MetaArgs["GO_VERSION"] != string(m[1]) {
		bad("GO_VERSION %q is not go.mod's go version", d.MetaArgs["GO_VERSION"])
	}
	builder := d.Stage("builder")
	if builder == nil || !strings.HasPrefix(builder.From, "golang:"+d.MetaArgs["GO_VERSION"]+"-") {
		bad("the builder stage must be FROM golang:${GO_VERSION}-…")
	} else if !slices.ContainsFunc(builder.Runs, func(r string) bool {
		return strings.Contains(r, "CGO_ENABLED=1") && strings.Contains(r, "-o /out/machine ./cmd/machine")
	}) {
		bad("the builder does not build ./cmd/machine with cgo (the NVML source needs it)")
	}
	if len(d.Stages) == 0 || d.Stages[len(d.Stages)-1].Name != "unified" {
		bad("the last stage must be unified, so a plain docker build builds it; stages are %v", d.StageNames())
	}
	for _, s := range d.Stages {
		for _, src := range s.Sources {
			if _, err := os.Stat(filepath.Join(root, src)); err != nil {
				bad("stage %s copies %s, which is not in the build context", s.Name, src)
			}
		}
	}
	for _, t := range sortedTargets() {
		s := d.Stage(t)
		if s == nil {
			bad("no stage %s (the targets are %v)", t, sortedTargets())
			continue
		}
		problems = append(problems, checkTarget(d, s)...)
	}
	return problems
}

// checkTarget checks what one target's image holds.
func checkTarget(d *dockerfile.File, s *dockerfile.Stage) []string {
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, s.Name+": "+fmt.Sprintf(format, args...))
	}
	if !strings.Contains(s.From, ":") && len(s.Ancestors) == 0 {
		bad("FROM %s names no earlier stage and no tagged image", s.From)
	}
	cuda := s.Name == "base" || slices.Contains(s.Ancestors, "base") ||
		slices.ContainsFunc(s.Runs, func(r string) bool { return strings.Contains(r, "cuda") })
	if s.Name == "api" && cuda {
		bad("the api image must not carry CUDA, yet it is built from base")
	}
	if s.Name != "api" && !cuda {
		bad("a GPU image must be built from base (the CUDA runtime)")
	}
	if s.Name == "base" {
		if !slices.ContainsFunc(s.Runs, func(r string) bool { return strings.Contains(r, "cuda-cudart-"+d.MetaArgs["CUDA_VERSION"]) }) {
			bad("installs no cuda-cudart-${CUDA_VERSION}")
		}
		if !strings.Contains(s.Env["NVIDIA_DRIVER_CAPABILITIES"], "utility") || s.Env["NVIDIA_VISIBLE_DEVICES"] == "" {
			bad("NVIDIA_VISIBLE_DEVICES and NVIDIA_DRIVER_CAPABILITIES (with utility, for NVML) must be set")
		}
	}
	if s.User != "machine" || !slices.Contains(s.Users, "machine") {
		bad("runs as %q; services must run as the unprivileged user machine, created with useradd", s.User)
	}
	if strings.Join(s.Health, " ") != "CMD /usr/local/bin/machine health" {
		bad("HEALTHCHECK is %v; it must run /usr/local/bin/machine health (exec form)", s.Health)
	}
	if s.StopSignal != "SIGTERM" {
		bad("STOPSIGNAL is %q; SIGTERM drains the machine", s.StopSignal)
	}
	if strings.Join(s.Entrypoint, " ") != "/usr/bin/tini -- /usr/local/bin/machine" {
		bad("ENTRYPOINT is %v; want tini forwarding signals to /usr/local/bin/machine", s.Entrypoint)
	}
	if !slices.Contains(s.Expose, s.Env["MACHINE_HEALTH_PORT"]) {
		bad("EXPOSE %v does not include MACHINE_HEALTH_PORT %s", s.Expose, s.Env["MACHINE_HEALTH_PORT"])
	}
	var have []string
	for l := range s.Layers {
		have = append(have, l)
	}
	slices.Sort(have)
	want := slices.Clone(imageTargets[s.Name])
	slices.Sort(want)
	if !slices.Equal(have, want) {
		bad("installs layers %v, want %v", have, want)
	}
	for _, c := range s.Installs {
		problems = append(problems, checkInstall(s, c)...)
	}

	cfg, err := config.Load(func(k string) (string, bool) { v, ok := s.Env[k]; return v, ok })
	if err != nil {
		bad("the image's environment is not a valid configuration: %v", err)
		return problems
	}
	writable := map[string]string{"MACHINE_WORKSPACE": cfg.Workspace, "MACHINE_RUN_DIR": cfg.RunDir, "MACHINE_LOG_DIR": cfg.LogDir,
		"MACHINE_CACHE_DIR": cfg.CacheDir, "MACHINE_ASSET_DIR": cfg.Assets.Dir}
	readable := map[string]string{"the binary": "/usr/local/bin/machine", "the console link": "/usr/local/bin/console"}
	if s.Layers["comfyui"] {
		writable["COMFYUI_DIR"] = cfg.ComfyUI.Dir
		readable["COMFYUI_MANIFEST"] = cfg.ComfyUI.Manifest
		if cfg.ComfyUI.Commit != d.MetaArgs["COMFYUI_COMMIT"] {
			bad("COMFYUI_COMMIT at run time is %q, not the build arg %q: boot would install another ComfyUI", cfg.ComfyUI.Commit, d.MetaArgs["COMFYUI_COMMIT"])
		}
	}
	if s.Layers["p5"] {
		readable["PLAYWRIGHT_P5_JS"] = cfg.P5JS
	}
	if s.Layers["browser"] {
		readable["chromium"] = "/usr/bin/chromium"
	}
	for _, dir := range []string{"/usr/bin", "/usr/local/bin"} {
		if !slices.Contains(dockerPath(s), dir) {
			bad("PATH %v lacks %s (the binary, chromium)", dockerPath(s), dir)
		}
	}
	for what, p := range readable {
		if _, ok := s.Owner[path.Clean(p)]; p == "" || !ok {
			bad("%s (%q) is not created in the image", what, p)
		}
	}
	for what, p := range writable {
		if _, ok := s.Owner[path.Clean(p)]; !path.IsAbs(p) || !ok {
			bad("%s (%q) is not created in the image", what, p)
			continue
		}
		for q, owner := range s.Owner {
			if (q == path.Clean(p) || strings.HasPrefix(q, path.Clean(p)+"/")) && owner != "machine" {
				bad("%s: %s belongs to %s; the machine user must own what it writes (chown -R machine:machine in the same RUN)", what, q, owner)
			}
		}
	}
	return problems
}

// checkInstall checks one `machine install` call against the real command's flags.
func checkInstall(s *dockerfile.Stage, c dockerfile.Install) []string {
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s: machine %s: ", s.Name, strings.Join(c.Args, " "))+fmt.Sprintf(format, args...))
	}
	if c.Stage != s.Name {
		return nil // checked in its own stage
	}
	cmd := newInstallCmd()
	if err := cmd.ParseFlags(c.Args[1:]); err != nil {
		bad("%v", err)
		return problems
	}
	layers, err := layer.Parse(c.Flag("layer"))
	if err != nil {
		bad("%v", err)
	}
	if slices.Contains(c.Args, "--apt") && c.User != "root" {
		bad("--apt needs root, but the stage runs it as %s", c.User)
	}
	if slices.Contains(layers, layer.P5) && (c.Flag("from") == "" || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(c.Flag("sha256"))) {
		bad("the p5 layer needs --from and a --sha256 that pins it")
	}
	return problems
}

func loadDockerfile(t *testing.T) (*dockerfile.File, []byte) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := dockerfile.Parse(src)
	if err != nil {
		t.Fatalf("BuildKit cannot parse the Dockerfile: %v", err)
	}
	return d, src
}

// TestDockerfile checks the image by reading it, since no Docker engine runs here.
func TestDockerfile(t *testing.T) {
	d, _ := loadDockerfile(t)
	for _, p := range checkDockerfile(d, repoRoot) {
		t.Error(p)
	}
}

// The checks fail on a broken Dockerfile: each change below breaks one promise of the image.
func TestDockerfileCheckCatchesBreakage(t *testing.T) {
	_, src := loadDockerfile(t)
	for _, m := range []struct{ name, old, new, want string }{
		{"no chown after ComfyUI", "\n && chown -R machine:machine /opt/ComfyUI /workspace", "", "COMFYUI_DIR: /opt/ComfyUI belongs to root"},
		{"no chown after p5", "--sha256 ${P5_SHA256} \\\n && chown -R machine:machine /opt/machine/p5 /workspace\nUSER machine\nLABEL org.opencontainers.image.title=\"machine (browser)\"",
			"--sha256 ${P5_SHA256}\nUSER machine\nLABEL org.opencontainers.image.title=\"machine (browser)\"", "browser: MACHINE_CACHE_DIR: /workspace/.cache/machine/downloads belongs to root"},
		{"root at the end", "USER machine\nLABEL org.opencontainers.image.title=\"machine (unified)\"", "", "unified: runs as \"root\""},
		{"no p5 path", "ENV PLAYWRIGHT_P5_JS=/opt/machine/p5/p5.min.js\nRUN machine install --layer browser --apt \\\n && rm -rf /var/lib/apt/lists/*\nRUN machine install --layer p5 --from https://registry.npmjs.org/p5/-/p5-${P5_VERSION}.tgz --sha256 ${P5_SHA256} \\\n && chown -R machine:machine /opt/machine/p5 /workspace\nUSER machine\nLABEL org.opencontainers.image.title=\"machine (unified)\"",
			"RUN machine install --layer browser --apt\nUSER machine\nLABEL org.opencontainers.image.title=\"machine (unified)\"", "unified: installs layers [browser comfyui]"},
		{"curl health check", `CMD ["/usr/local/bin/machine", "health"]`, `CMD curl -f http://localhost:9090/health`, "HEALTHCHECK"},
		{"SIGKILL", "STOPSIGNAL SIGTERM", "STOPSIGNAL SIGKILL", "STOPSIGNAL is \"SIGKILL\""},
		{"unknown layer", "--layer browser --apt", "--layer chrome --apt", "unknown layer \"chrome\""},
		{"unknown flag", "--layer comfyui --apt", "--layer comfyui --apt-get", "unknown flag: --apt-get"},
		{"api with CUDA", "FROM runtime AS api", "FROM runtime AS api\nRUN apt-get install -y cuda-cudart-12-8", "api: the api image must not carry CUDA"},
		{"stage used before it is defined", "FROM runtime AS api", "FROM base AS api", "api: FROM base names no earlier stage"},
		{"log dir never made", "MACHINE_LOG_DIR=/workspace/logs", "MACHINE_LOG_DIR=/var/log/machine", "MACHINE_LOG_DIR (\"/var/log/machine\") is not created"},
		{"unpinned ComfyUI", "ARG COMFYUI_COMMIT=3fb07a804f1738b8f8c8b0d535eaccc72a9ddc7b", "ARG COMFYUI_COMMIT=", "COMFYUI_COMMIT"},
		{"unified not last", "LABEL org.opencontainers.image.title=\"machine (unified)\"", "LABEL org.opencontainers.image.title=\"machine (unified)\"\nFROM runtime AS extra", "the last stage must be unified"},
	} {
		t.Run(m.name, func(t *testing.T) {
			if !strings.Contains(string(src), m.old) {
				t.Fatalf("the Dockerfile no longer contains %q; update this mutation", m.old)
			}
			d, err := dockerfile.Parse([]byte(strings.Replace(string(src), m.old, m.new, 1)))
			if err != nil {
				t.Fatal(err)
			}
			problems := checkDockerfile(d, repoRoot)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, m.want) }) {
				t.Errorf("no problem mentions %q; got:\n%s", m.want, strings.Join(problems, "\n"))
			}
		})
	}
}

// Every target can be built by name: make image-<target>, and docker buildx bake <target> (or all).
func TestImageTargetsInMakefileAndBake(t *testing.T) {
	mk, _ := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	m := regexp.MustCompile(`(?m)^IMAGE_TARGETS\s*:=\s*(.+)$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("the Makefile has no IMAGE_TARGETS")
	}
	got := strings.Fields(string(m[1]))
	slices.Sort(got)
	if !slices.Equal(got, sortedTargets()) {
		t.Errorf("Makefile IMAGE_TARGETS = %v, want %v", got, sortedTargets())
	}
	if !strings.Contains(string(mk), "$(addprefix image-,$(IMAGE_TARGETS)): image-%:") {
		t.Error("the Makefile has no image-<target> rule")
	}
	bake, err := os.ReadFile(filepath.Join(repoRoot, "docker-bake.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	all := regexp.MustCompile(`group "all" \{\s*targets = \[([^\]]*)\]`).FindSubmatch(bake)
	if all == nil {
		t.Fatal(`docker-bake.hcl has no group "all"`)
	}
	for _, target := range sortedTargets() {
		if !strings.Contains(string(all[1]), `"`+target+`"`) {
			t.Errorf(`group "all" lacks %s`, target)
		}
		block := regexp.MustCompile(`target "` + target + `" \{[^}]*target\s*=\s*"` + target + `"`)
		if !block.Match(bake) {
			t.Errorf(`docker-bake.hcl has no target %q building the Dockerfile's %s stage`, target, target)
		}
	}
	d, _ := loadDockerfile(t)
	for _, arg := range []string{"GO_VERSION", "CUDA_VERSION", "COMFYUI_COMMIT", "P5_VERSION", "P5_SHA256"} {
		v := regexp.MustCompile(`variable "` + arg + `" \{ default = "([^"]*)" \}`).FindSubmatch(bake)
		if v == nil || string(v[1]) != d.MetaArgs[arg] {
			t.Errorf("docker-bake.hcl's %s differs from the Dockerfile's %q", arg, d.MetaArgs[arg])
		}
	}
}
