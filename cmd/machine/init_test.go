package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/deploy"
)

// Every template `machine init` writes passes `machine config validate` once its secrets are
// filled in, run as an operator would: the file's variables as the process environment.
func TestInitWritesEveryTemplateThatValidates(t *testing.T) {
	dir := t.TempDir()
	for _, name := range deploy.TemplateNames() {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(dir, name+".env")
			msg, err := command(nil, "init", "--template", name, "--out", out).CombinedOutput()
			if err != nil || !strings.Contains(string(msg), "wrote "+out) {
				t.Fatalf("init: %v\n%s", err, msg)
			}
			if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("the env file is %v (%v); want mode 0600, since it holds secrets", st.Mode(), err)
			}
			data, _ := os.ReadFile(out)
			env, err := deploy.ParseEnv(data)
			if err != nil {
				t.Fatal(err)
			}
			tpl, _ := deploy.Lookup(name)
			for _, s := range tpl.Secrets {
				env[s] = "dummy-" + strings.ToLower(s)
				if s == "HUB_REDIS_URL" {
					env[s] = "redis://:dummy@127.0.0.1:6379/0"
				}
			}
			env["MACHINE_RUN_DIR"] = t.TempDir()
			res, err := command(env, "config", "validate").CombinedOutput()
			if err != nil || !strings.Contains(string(res), "configuration is valid") {
				t.Fatalf("config validate with %s: %v\n%s", name, err, res)
			}
		})
	}
}

func TestInitListAndMistakes(t *testing.T) {
	out, err := command(nil, "init", "--list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"comfyui-gpu", "api-only", "browser", "hybrid", "simulation"} {
		if !strings.Contains(string(out), "  "+name+" ") {
			t.Errorf("--list lacks %s:\n%s", name, out)
		}
	}
	bad, err := command(nil, "init", "--template", "comfy").CombinedOutput()
	if err == nil || !strings.Contains(string(bad), `unknown template "comfy"; the templates are:`) || !strings.Contains(string(bad), "comfyui-gpu") {
		t.Errorf("unknown template: %v\n%s", err, bad)
	}
	stdout, err := command(nil, "init", "--template", "simulation").Output()
	if err != nil || !strings.HasPrefix(string(stdout), "# machine template: simulation") {
		t.Errorf("without --out the template goes to standard output: %v\n%s", err, stdout)
	}
	file := filepath.Join(t.TempDir(), "machine.env")
	_ = os.WriteFile(file, []byte("KEEP=me\n"), 0o600)
	again, err := command(nil, "init", "--template", "simulation", "--out", file).CombinedOutput()
	if kept, _ := os.ReadFile(file); err == nil || string(kept) != "KEEP=me\n" || !strings.Contains(string(again), "--force") {
		t.Errorf("an existing file was overwritten or the refusal says nothing: %v\n%s", err, again)
	}
}
