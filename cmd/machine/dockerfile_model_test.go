package main

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// No Docker engine runs here, so the image is checked by reading the Dockerfile with BuildKit's
// own parser and replaying, per stage, what each instruction leaves in the image: the
// environment, the user, the paths created and who owns them, the layers installed. The
// replay knows only the shell commands this Dockerfile uses (mkdir, chown, ln, useradd and
// `machine install`); anything it does not understand it leaves alone.

// installCall is one `machine install` of a RUN line.
type installCall struct {
	stage string
	user  string   // who runs it
	env   []string // VAR=value prefixes of the command
	args  []string // after "machine"
}

// flag returns the value of --name in a call.
func (c installCall) flag(name string) string {
	for i, a := range c.args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
		if a == "--"+name && i+1 < len(c.args) {
			return c.args[i+1]
		}
	}
	return ""
}

// layers returns the --layer value of a call.
func (c installCall) layers() []string {
	if v := c.flag("layer"); v != "" {
		return strings.Split(v, ",")
	}
	return nil
}

// stageState is what a stage's image holds after its last instruction.
type stageState struct {
	name, from  string // from: an earlier stage's name, or an image
	args        map[string]string
	env         map[string]string
	user        string
	owner       map[string]string // path created → its owner
	copied      map[string]string // COPY destination → source in the build context
	sources     []string          // every COPY source from the build context
	installs    []installCall
	layers      map[string]bool
	health      []string
	stopSignal  string
	entrypoint  []string
	expose      []string
	runs        []string // every RUN line of the stage and its ancestors, expanded
	users       []string // users created with useradd
	ancestorsOf []string // the stages this one is built FROM, nearest first
}

// dockerfile is the replayed Dockerfile.
type dockerfile struct {
	metaArgs map[string]string
	stages   []*stageState
}

func (d *dockerfile) stage(name string) *stageState {
	for _, s := range d.stages {
		if s.name == name {
			return s
		}
	}
	return nil
}

func (d *dockerfile) stageNames() []string {
	var out []string
	for _, s := range d.stages {
		out = append(out, s.name)
	}
	return out
}

var varRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

func expand(s string, vars ...map[string]string) string {
	return varRef.ReplaceAllStringFunc(s, func(ref string) string {
		name := strings.Trim(ref, "${}")
		for _, v := range vars {
			if val, ok := v[name]; ok {
				return val
			}
		}
		return ref
	})
}

// layerOutputs are the paths a layer install creates, from the configuration's environment.
func layerOutputs(layer string, env map[string]string) []string {
	cache := env["MACHINE_CACHE_DIR"]
	switch layer {
	case "comfyui":
		return []string{env["COMFYUI_DIR"], path.Join(cache, "markers"), path.Join(cache, "downloads")}
	case "browser":
		return []string{"/usr/bin/chromium"}
	case "p5":
		return []string{env["PLAYWRIGHT_P5_JS"], path.Dir(env["PLAYWRIGHT_P5_JS"]), path.Join(cache, "downloads")}
	}
	return nil
}

func parseDockerfile(src []byte) (*dockerfile, error) {
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		return nil, err
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil, err
	}
	d := &dockerfile{metaArgs: map[string]string{}}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				d.metaArgs[kv.Key] = *kv.Value
			}
		}
	}
	for _, st := range stages {
		s := &stageState{name: st.Name, from: expand(st.BaseName, d.metaArgs), args: map[string]string{},
			env: map[string]string{}, user: "root", owner: map[string]string{}, copied: map[string]string{}, layers: map[string]bool{}}
		if parent := d.stage(s.from); parent != nil {
			s.inherit(parent)
		}
		for _, c := range st.Commands {
			if err := s.apply(c, d.metaArgs); err != nil {
				return nil, fmt.Errorf("stage %s: %w", s.name, err)
			}
		}
		d.stages = append(d.stages, s)
	}
	return d, nil
}

func (s *stageState) inherit(p *stageState) {
	clone := func(m map[string]string) map[string]string {
		out := make(map[string]string, len(m))
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	s.env, s.owner, s.copied, s.user = clone(p.env), clone(p.owner), clone(p.copied), p.user
	s.installs, s.users, s.runs = slices.Clone(p.installs), slices.Clone(p.users), slices.Clone(p.runs)
	for l := range p.layers {
		s.layers[l] = true
	}
	s.health, s.stopSignal, s.entrypoint, s.expose = p.health, p.stopSignal, p.entrypoint, slices.Clone(p.expose)
	s.ancestorsOf = append([]string{p.name}, p.ancestorsOf...)
}

func (s *stageState) create(p string) {
	p = path.Clean(p)
	for q := p; q != "/" && q != "."; q = path.Dir(q) {
		if _, ok := s.owner[q]; !ok {
			s.owner[q] = s.user
		}
	}
}

func (s *stageState) chown(owner, root string) {
	root = path.Clean(root)
	for p := range s.owner {
		if p == root || strings.HasPrefix(p, root+"/") {
			s.owner[p] = owner
		}
	}
}

func (s *stageState) apply(c instructions.Command, meta map[string]string) error {
	x := func(v string) string { return expand(v, s.args, s.env) }
	switch c := c.(type) {
	case *instructions.ArgCommand:
		for _, kv := range c.Args {
			if kv.Value != nil {
				s.args[kv.Key] = *kv.Value
			} else if v, ok := meta[kv.Key]; ok {
				s.args[kv.Key] = v
			}
		}
	case *instructions.EnvCommand:
		for _, kv := range c.Env {
			s.env[kv.Key] = x(kv.Value)
		}
	case *instructions.UserCommand:
		s.user = x(c.User)
	case *instructions.WorkdirCommand:
		s.create(x(c.Path))
	case *instructions.CopyCommand:
		dest := x(c.DestPath)
		s.create(dest)
		if c.From == "" {
			s.sources = append(s.sources, c.SourcePaths...)
			if len(c.SourcePaths) == 1 {
				s.copied[dest] = c.SourcePaths[0]
			}
		}
	case *instructions.AddCommand:
		s.create(x(c.DestPath))
	case *instructions.HealthCheckCommand:
		s.health = c.Health.Test
	case *instructions.StopSignalCommand:
		s.stopSignal = c.Signal
	case *instructions.EntrypointCommand:
		s.entrypoint = c.CmdLine
	case *instructions.ExposeCommand:
		s.expose = append(s.expose, c.Ports...)
	case *instructions.RunCommand:
		line := x(strings.Join(c.CmdLine, " "))
		s.runs = append(s.runs, line)
		for _, part := range strings.Split(line, "&&") {
			s.run(strings.Fields(part))
		}
	}
	return nil
}

// run replays one shell command of a RUN line.
func (s *stageState) run(f []string) {
	var env []string
	for len(f) > 0 && strings.Contains(f[0], "=") && !strings.HasPrefix(f[0], "-") {
		env, f = append(env, f[0]), f[1:]
	}
	if len(f) == 0 {
		return
	}
	operands := func(from []string) []string {
		var out []string
		for _, a := range from {
			if !strings.HasPrefix(a, "-") {
				out = append(out, a)
			}
		}
		return out
	}
	switch path.Base(f[0]) {
	case "mkdir":
		for _, p := range operands(f[1:]) {
			s.create(p)
		}
	case "chown":
		ops := operands(f[1:])
		if len(ops) > 1 && slices.Contains(f, "-R") {
			owner, _, _ := strings.Cut(ops[0], ":")
			for _, p := range ops[1:] {
				s.chown(owner, p)
			}
		}
	case "ln":
		if ops := operands(f[1:]); len(ops) == 2 {
			s.create(ops[1])
		}
	case "useradd":
		if ops := operands(f[1:]); len(ops) > 0 {
			s.users = append(s.users, ops[len(ops)-1])
		}
	case "machine":
		call := installCall{stage: s.name, user: s.user, env: env, args: f[1:]}
		if len(call.args) == 0 || call.args[0] != "install" {
			return
		}
		s.installs = append(s.installs, call)
		for _, l := range call.layers() {
			s.layers[l] = true
			for _, p := range layerOutputs(l, s.env) {
				if p != "" && p != "." {
					s.create(p)
				}
			}
		}
	}
}

func readDockerfile(root string) ([]byte, error) {
	return os.ReadFile(path.Join(root, "Dockerfile"))
}
