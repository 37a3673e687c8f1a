// Package dockerfile replays a Dockerfile for tests, since no Docker engine runs here: it reads
// the file with BuildKit's own parser and follows, per stage, what each instruction leaves in
// the image: the environment, the user, the paths created and who owns them, the layers
// `machine install --layer` put in. It knows only the shell commands the project's Dockerfile
// uses (mkdir, chown, ln, useradd and machine install); anything else it leaves alone.
package dockerfile

import (
	"bytes"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// Install is one `machine install` of a RUN line.
type Install struct {
	Stage string
	User  string   // who runs it
	Env   []string // VAR=value prefixes of the command
	Args  []string // after "machine"
}

// Flag returns the value of --name in a call.
func (c Install) Flag(name string) string {
	for i, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
		if a == "--"+name && i+1 < len(c.Args) {
			return c.Args[i+1]
		}
	}
	return ""
}

// Layers returns the --layer value of a call.
func (c Install) Layers() []string {
	if v := c.Flag("layer"); v != "" {
		return strings.Split(v, ",")
	}
	return nil
}

// Stage is what a stage's image holds after its last instruction.
type Stage struct {
	Name, From string // From: an earlier stage's name, or an image
	Args       map[string]string
	Env        map[string]string
	User       string
	Owner      map[string]string // path created → its owner
	Copied     map[string]string // COPY destination → source in the build context
	Sources    []string          // every COPY source from the build context
	Installs   []Install
	Layers     map[string]bool
	Health     []string
	StopSignal string
	Entrypoint []string
	Expose     []string
	Runs       []string // every RUN line of the stage and its ancestors, expanded
	Users      []string // users created with useradd
	Ancestors  []string // the stages this one is built FROM, nearest first
}

// File is the replayed Dockerfile.
type File struct {
	MetaArgs map[string]string
	Stages   []*Stage
}

// Stage returns the stage with the given name, nil when there is none.
func (d *File) Stage(name string) *Stage {
	for _, s := range d.Stages {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// StageNames lists the stages in order.
func (d *File) StageNames() []string {
	var out []string
	for _, s := range d.Stages {
		out = append(out, s.Name)
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

// Parse reads a Dockerfile and replays its stages.
func Parse(src []byte) (*File, error) {
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		return nil, err
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil, err
	}
	d := &File{MetaArgs: map[string]string{}}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				d.MetaArgs[kv.Key] = *kv.Value
			}
		}
	}
	for _, st := range stages {
		s := &Stage{Name: st.Name, From: expand(st.BaseName, d.MetaArgs), Args: map[string]string{},
			Env: map[string]string{}, User: "root", Owner: map[string]string{}, Copied: map[string]string{}, Layers: map[string]bool{}}
		if parent := d.Stage(s.From); parent != nil {
			s.inherit(parent)
		}
		for _, c := range st.Commands {
			if err := s.apply(c, d.MetaArgs); err != nil {
				return nil, fmt.Errorf("stage %s: %w", s.Name, err)
			}
		}
		d.Stages = append(d.Stages, s)
	}
	return d, nil
}

func (s *Stage) inherit(p *Stage) {
	clone := func(m map[string]string) map[string]string {
		out := make(map[string]string, len(m))
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	s.Env, s.Owner, s.Copied, s.User = clone(p.Env), clone(p.Owner), clone(p.Copied), p.User
	s.Installs, s.Users, s.Runs = slices.Clone(p.Installs), slices.Clone(p.Users), slices.Clone(p.Runs)
	for l := range p.Layers {
		s.Layers[l] = true
	}
	s.Health, s.StopSignal, s.Entrypoint, s.Expose = p.Health, p.StopSignal, p.Entrypoint, slices.Clone(p.Expose)
	s.Ancestors = append([]string{p.Name}, p.Ancestors...)
}

func (s *Stage) create(p string) {
	p = path.Clean(p)
	for q := p; q != "/" && q != "."; q = path.Dir(q) {
		if _, ok := s.Owner[q]; !ok {
			s.Owner[q] = s.User
		}
	}
}

func (s *Stage) chown(owner, root string) {
	root = path.Clean(root)
	for p := range s.Owner {
		if p == root || strings.HasPrefix(p, root+"/") {
			s.Owner[p] = owner
		}
	}
}

func (s *Stage) apply(c instructions.Command, meta map[string]string) error {
	x := func(v string) string { return expand(v, s.Args, s.Env) }
	switch c := c.(type) {
	case *instructions.ArgCommand:
		for _, kv := range c.Args {
			if kv.Value != nil {
				s.Args[kv.Key] = *kv.Value
			} else if v, ok := meta[kv.Key]; ok {
				s.Args[kv.Key] = v
			}
		}
	case *instructions.EnvCommand:
		for _, kv := range c.Env {
			s.Env[kv.Key] = x(kv.Value)
		}
	case *instructions.UserCommand:
		s.User = x(c.User)
	case *instructions.WorkdirCommand:
		s.create(x(c.Path))
	case *instructions.CopyCommand:
		dest := x(c.DestPath)
		s.create(dest)
		if c.From == "" {
			s.Sources = append(s.Sources, c.SourcePaths...)
			if len(c.SourcePaths) == 1 {
				s.Copied[dest] = c.SourcePaths[0]
			}
		}
	case *instructions.AddCommand:
		s.create(x(c.DestPath))
	case *instructions.HealthCheckCommand:
		s.Health = c.Health.Test
	case *instructions.StopSignalCommand:
		s.StopSignal = c.Signal
	case *instructions.EntrypointCommand:
		s.Entrypoint = c.CmdLine
	case *instructions.ExposeCommand:
		s.Expose = append(s.Expose, c.Ports...)
	case *instructions.RunCommand:
		line := x(strings.Join(c.CmdLine, " "))
		s.Runs = append(s.Runs, line)
		for _, part := range strings.Split(line, "&&") {
			s.run(strings.Fields(part))
		}
	}
	return nil
}

// run replays one shell command of a RUN line.
func (s *Stage) run(f []string) {
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
			s.Users = append(s.Users, ops[len(ops)-1])
		}
	case "machine":
		call := Install{Stage: s.Name, User: s.User, Env: env, Args: f[1:]}
		if len(call.Args) == 0 || call.Args[0] != "install" {
			return
		}
		s.Installs = append(s.Installs, call)
		for _, l := range call.Layers() {
			s.Layers[l] = true
			for _, p := range layerOutputs(l, s.Env) {
				if p != "" && p != "." {
					s.create(p)
				}
			}
		}
	}
}
