// Package deploy holds what deploys the machine besides the Dockerfile: the configuration
// templates `machine init` writes (env/), the Kubernetes manifests (k8s/), the Prometheus
// alerts and Grafana dashboard (monitoring/), and the tests that check all of them, and the
// Compose stack at the repository's root, against the code.
package deploy

import (
	"embed"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
)

//go:embed env/*.env
var envFiles embed.FS

// Template is one commented env file for a common setup.
type Template struct {
	Name    string   // e.g. comfyui-gpu
	Summary string   // one line: what the setup is for
	Body    []byte   // the file
	Secrets []string // variables marked "# Secret:", left empty for the operator to fill
}

// Templates returns every template, sorted by name.
func Templates() []Template {
	entries, err := envFiles.ReadDir("env")
	if err != nil {
		panic(err) // embedded at build time: cannot fail
	}
	var out []Template
	for _, e := range entries {
		body, err := envFiles.ReadFile(path.Join("env", e.Name()))
		if err != nil {
			panic(err)
		}
		out = append(out, newTemplate(strings.TrimSuffix(e.Name(), ".env"), body))
	}
	slices.SortFunc(out, func(a, b Template) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Lookup returns the template with the given name.
func Lookup(name string) (Template, bool) {
	for _, t := range Templates() {
		if t.Name == name {
			return t, true
		}
	}
	return Template{}, false
}

// TemplateNames lists the templates' names.
func TemplateNames() []string {
	var out []string
	for _, t := range Templates() {
		out = append(out, t.Name)
	}
	return out
}

func newTemplate(name string, body []byte) Template {
	t := Template{Name: name, Body: body}
	lines := strings.Split(string(body), "\n")
	if first, ok := strings.CutPrefix(lines[0], "# machine template: "+name+" - "); ok {
		t.Summary = strings.TrimSpace(first)
	}
	for i, l := range lines {
		if strings.HasPrefix(l, "# Secret:") && i+1 < len(lines) {
			if k, _, ok := strings.Cut(lines[i+1], "="); ok && !strings.HasPrefix(k, "#") {
				t.Secrets = append(t.Secrets, k)
			}
		}
	}
	return t
}

var (
	envKey   = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`)
	envValue = regexp.MustCompile(`^[^\s"'$\x60\\]*$`)
)

// ParseEnv reads an env file as Docker's --env-file and a shell's `set -a; .` both read it:
// KEY=VALUE lines and # comments. Values may not hold spaces, quotes, $ or backslashes, on
// which the two readers disagree. Every bad line is reported at once.
func ParseEnv(data []byte) (map[string]string, error) {
	env := map[string]string{}
	var problems []string
	for i, line := range strings.Split(string(data), "\n") {
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		switch {
		case !ok || !envKey.MatchString(k):
			problems = append(problems, fmt.Sprintf("line %d is not KEY=VALUE with an upper-case KEY: %q", i+1, line))
		case !envValue.MatchString(v):
			problems = append(problems, fmt.Sprintf("line %d: the value of %s holds a space, quote, $ or backslash, which docker --env-file and a shell read differently", i+1, k))
		case has(env, k):
			problems = append(problems, fmt.Sprintf("line %d sets %s a second time", i+1, k))
		default:
			env[k] = v
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("env file: %s", strings.Join(problems, "; "))
	}
	return env, nil
}

func has(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}
