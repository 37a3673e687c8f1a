package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction with its continuation lines joined.
type instruction struct {
	cmd  string
	args string
}

func parseDockerfile(t testing.TB, path string) []instruction {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		full := cur.String()
		cur.Reset()
		cmd, args, _ := strings.Cut(full, " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
	}
	if cur.Len() > 0 {
		t.Fatalf("Dockerfile ends inside a continued line: %q", cur.String())
	}
	return out
}

// TestDockerfile checks the image by reading it, since no Docker engine runs here: a Go builder
// with cgo on the go.mod's Go version, a slim runtime stage, the binary as ENTRYPOINT, a
// HEALTHCHECK that asks /health, and COPY sources that exist.
func TestDockerfile(t *testing.T) {
	root := filepath.Join("..", "..")
	ins := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	known := map[string]bool{"FROM": true, "WORKDIR": true, "COPY": true, "RUN": true, "ARG": true, "ENV": true,
		"EXPOSE": true, "STOPSIGNAL": true, "HEALTHCHECK": true, "ENTRYPOINT": true, "CMD": true, "LABEL": true, "USER": true}
	var stages []string
	stageOf := map[int]string{}
	for i, in := range ins {
		if !known[in.cmd] {
			t.Errorf("unknown instruction %q", in.cmd)
		}
		if in.cmd == "FROM" {
			stages = append(stages, in.args)
		}
		stageOf[i] = stages[len(stages)-1]
	}
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got stages %v", stages)
	}
	goMod, _ := os.ReadFile(filepath.Join(root, "go.mod"))
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(goMod)
	builder := stages[0]
	if !strings.HasPrefix(builder, "golang:"+string(goVersion[1])) || !strings.HasSuffix(builder, " AS builder") {
		t.Errorf("builder stage %q must be golang:%s… AS builder", builder, goVersion[1])
	}
	runtime := stages[len(stages)-1]
	if strings.HasPrefix(runtime, "golang") || !strings.Contains(runtime, "slim") {
		t.Errorf("runtime stage %q should be a slim image, not the Go toolchain", runtime)
	}

	var cgo, copyFromBuilder, entry, health, console bool
	for i, in := range ins {
		switch in.cmd {
		case "RUN":
			if stageOf[i] == runtime && strings.Contains(in.args, "ln -s /usr/local/bin/machine /usr/local/bin/console") {
				console = true
			}
			if stageOf[i] == builder && strings.Contains(in.args, "CGO_ENABLED=1") && strings.Contains(in.args, "./cmd/machine") {
				cgo = true
			}
		case "COPY":
			if strings.HasPrefix(in.args, "--from=builder") {
				copyFromBuilder = stageOf[i] == runtime
				continue
			}
			fields := strings.Fields(in.args)
			for _, src := range fields[:len(fields)-1] {
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("COPY source %s does not exist", src)
				}
			}
		case "ENTRYPOINT":
			var argv []string
			if err := json.Unmarshal([]byte(in.args), &argv); err != nil || len(argv) == 0 || argv[0] != "/usr/local/bin/machine" {
				t.Errorf("ENTRYPOINT %s must be the exec form of /usr/local/bin/machine", in.args)
			}
			entry = true
		case "HEALTHCHECK":
			_, cmdJSON, ok := strings.Cut(in.args, "CMD ")
			var argv []string
			if !ok || json.Unmarshal([]byte(cmdJSON), &argv) != nil || strings.Join(argv, " ") != "/usr/local/bin/machine health" {
				t.Errorf("HEALTHCHECK %q must run `machine health`, which asks /health", in.args)
			}
			health = stageOf[i] == runtime
		}
	}
	if !cgo || !copyFromBuilder || !entry || !health || !console {
		t.Errorf("cgo build %v, binary copied into runtime %v, ENTRYPOINT %v, HEALTHCHECK in runtime %v, console link %v",
			cgo, copyFromBuilder, entry, health, console)
	}
}
