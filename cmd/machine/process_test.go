package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/internal/redistest"
	"github.com/emp-job-queue/machine/internal/testutil"
)

var binary, binaryNoCgo, testService string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "machine-bin")
	if err != nil {
		panic(err)
	}
	binary, binaryNoCgo, testService = filepath.Join(dir, "machine"), filepath.Join(dir, "machine-nocgo"), filepath.Join(dir, "testservice")
	for _, err := range []error{
		testutil.Build(".", binary), testutil.Build(".", binaryNoCgo, "CGO_ENABLED=0"),
		testutil.Build("../../internal/testservice", testService),
	} {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func command(env map[string]string, args ...string) *exec.Cmd {
	cmd := exec.Command(binary, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

// proc is a running `machine --no-tui`.
type proc struct{ *testutil.Machine }

func (p *proc) log() string { return p.Output() }

// startMachine starts the binary with env (on top of PATH and HOME) and waits until it is ready;
// the test's end kills it, printing its output when the test failed.
func startMachine(t testing.TB, env map[string]string) *proc {
	t.Helper()
	return startMachineCmd(t, env, []string{binary, "--no-tui"})
}

// startMachineCmd starts the machine through argv (whose command ends up running it).
func startMachineCmd(t testing.TB, env map[string]string, argv []string) *proc {
	t.Helper()
	m, err := testutil.StartCommand(argv, command(env).Env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = m.Cmd.Process.Kill()
		<-m.Done()
		if t.Failed() {
			t.Logf("machine output:\n%s", m.Output())
		}
	})
	if err := m.WaitReady(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	return &proc{m}
}

func (p *proc) status(t testing.TB) map[string]any {
	t.Helper()
	resp, err := http.Get(p.URL("/status"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func completed(st map[string]any) int {
	n := 0
	for _, s := range st["slots"].([]any) {
		n += int(s.(map[string]any)["completed"].(float64))
	}
	return n
}

func submit(t testing.TB, env map[string]string, args ...string) []string {
	t.Helper()
	out, err := command(env, append([]string{"submit"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("submit %v: %v\n%s", args, err, out)
	}
	return strings.Fields(string(out))
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// The bare `make run` path: no HUB_REDIS_URL, so an embedded broker; `machine submit` finds it
// through the run directory, whether or not something already listens on 6379.
func TestEmbeddedBrokerDemo(t *testing.T) {
	runDir := t.TempDir()
	env := map[string]string{"MACHINE_RUN_DIR": runDir, "WORKER_SIMULATION_PROCESSING_TIME": "0.05", "MACHINE_ID": "demo"}
	p := startMachine(t, env)
	ids := submit(t, map[string]string{"MACHINE_RUN_DIR": runDir}, "--count", "4")
	if len(ids) != 4 {
		t.Fatalf("submit printed %v, want 4 job ids", ids)
	}
	waitUntil(t, "4 completed jobs", func() bool { return completed(p.status(t)) == 4 })
	if len(p.status(t)["slots"].([]any)) != 2 {
		t.Error("the demo should run one slot per simulated GPU (2)")
	}
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Err(); err != nil {
		t.Fatalf("machine exited with %v after SIGTERM", err)
	}
	if _, err := os.Stat(filepath.Join(runDir, "broker.url")); !os.IsNotExist(err) {
		t.Error("the embedded broker's URL file outlived the machine")
	}
	// Every log line is one JSON object.
	sc := bufio.NewScanner(strings.NewReader(p.log()))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil || m["msg"] == nil {
			t.Errorf("log line is not JSON: %s", sc.Text())
		}
	}
}

// SIGTERM with a real Redis: claiming stops, the in-flight job gets the drain timeout, then goes
// back to jobs:pending with its retries untouched.
func TestSIGTERMDrainsToTheQueue(t *testing.T) {
	srv := redistest.Start(t)
	env := map[string]string{"HUB_REDIS_URL": srv.URL, "MACHINE_ID": "box", "WORKER_CONNECTORS": "simulation:1",
		"MACHINE_DRAIN_TIMEOUT": "1s", "MACHINE_RUN_DIR": t.TempDir()}
	p := startMachine(t, env)
	id := submit(t, env, "--payload", `{"duration_ms":60000}`)[0]
	rdb := srv.Client()
	defer rdb.Close()
	ctx := context.Background()
	waitUntil(t, "the job to run", func() bool { return rdb.HGet(ctx, "job:"+id, "status").Val() == "in_progress" })
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
		if err := p.Err(); err != nil {
			t.Fatalf("machine exited with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("machine did not exit within 20 s of SIGTERM")
	}
	h := rdb.HGetAll(ctx, "job:"+id).Val()
	if h["status"] != "pending" || h["retry_count"] != "0" || rdb.ZScore(ctx, "jobs:pending", id).Err() != nil {
		t.Fatalf("job after SIGTERM: %v; want back in jobs:pending with no retry used", h)
	}
	if !strings.Contains(p.log(), "drain timeout passed") {
		t.Error("the drain timeout was not logged")
	}
}

func TestConfigValidateAndPlan(t *testing.T) {
	out, err := command(map[string]string{"WORKER_CONNECTORS": "comfyui:zz", "MACHINE_GPU_COUNT": "two"}, "config", "validate").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "MACHINE_GPU_COUNT") || !strings.Contains(string(out), "comfyui:zz") {
		t.Errorf("config validate accepted a broken config or hid a problem:\n%s", out)
	}
	out, err = command(map[string]string{"WORKER_CONNECTORS": "simulation,mock"}, "config", "validate").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "valid") {
		t.Errorf("config validate refused a good config: %v\n%s", err, out)
	}
	out, err = command(map[string]string{"MACHINE_ID": "box", "MACHINE_GPU_COUNT": "2", "WORKER_CONNECTORS": "comfyui,mock"}, "plan", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var plan struct {
		Slots []struct {
			ID  string `json:"id"`
			GPU int    `json:"gpu"`
		} `json:"slots"`
		Services []struct {
			Name string `json:"name"`
			Port int    `json:"port"`
		} `json:"services"`
	}
	if err := json.Unmarshal(out, &plan); err != nil {
		t.Fatalf("plan --json is not JSON: %v\n%s", err, out)
	}
	if len(plan.Slots) != 3 || plan.Slots[1].ID != "box-worker-comfyui-1" || plan.Slots[1].GPU != 1 || plan.Services[1].Port != 8189 {
		t.Errorf("plan = %+v", plan)
	}
	out, _ = command(map[string]string{"MACHINE_GPU_COUNT": "2", "WORKER_CONNECTORS": "simulation"}, "plan").Output()
	if !strings.Contains(string(out), "SLOT") || !strings.Contains(string(out), "-worker-simulation-1") {
		t.Errorf("plan table:\n%s", out)
	}
	// A missing key is a problem, listed after the plan; plan still prints it and succeeds,
	// validate prints both and fails.
	noKey := map[string]string{"WORKER_CONNECTORS": "openai,simulation", "OPENAI_API_KEY": ""}
	out, err = command(noKey, "plan").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "-worker-openai-0") || !strings.Contains(string(out), "OPENAI_API_KEY") {
		t.Errorf("plan without the OpenAI key: %v\n%s", err, out)
	}
	out, err = command(noKey, "config", "validate").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "-worker-openai-0") || !strings.Contains(string(out), "OPENAI_API_KEY") {
		t.Errorf("config validate without the OpenAI key: %v\n%s", err, out)
	}
}

// Two machines on one host get run directories (control sockets) of their own.
func TestDefaultRunDirIsPerMachine(t *testing.T) {
	sock := func(id string) string {
		out, _ := command(map[string]string{"MACHINE_ID": id, "XDG_RUNTIME_DIR": "/run/user/7"}, "console").CombinedOutput()
		return string(out)
	}
	for _, id := range []string{"box-a", "box-b"} {
		if out := sock(id); !strings.Contains(out, "/run/user/7/machine/"+id+"/control.sock") {
			t.Errorf("the console of %s looked elsewhere:\n%s", id, out)
		}
	}
}

func TestSubmitWithoutBrokerSaysWhatToDo(t *testing.T) {
	out, err := command(map[string]string{"MACHINE_RUN_DIR": t.TempDir()}, "submit").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "HUB_REDIS_URL") {
		t.Errorf("submit with no broker: %v\n%s", err, out)
	}
}

// A build without cgo has no NVML: it runs on simulated GPUs, and says so clearly when real
// ones are demanded.
func TestBuildWithoutCgo(t *testing.T) {
	cmd := exec.Command(binaryNoCgo, "plan")
	cmd.Env = []string{"GPU_MODE=actual"}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "CGO_ENABLED=0") || !strings.Contains(string(out), "GPU_MODE") {
		t.Errorf("GPU_MODE=actual without cgo: %v\n%s", err, out)
	}
	cmd = exec.Command(binaryNoCgo, "plan")
	cmd.Env = []string{"MACHINE_GPU_COUNT=3"}
	out, err = cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "GPUs 3 (simulated") {
		t.Errorf("plan without cgo: %v\n%s", err, out)
	}
}

// testToken is the MACHINE_API_TOKEN of the machines httpDo talks to.
const testToken = "process-test-token"

func httpDo(t testing.TB, method, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

func service(t testing.TB, p *proc, name string) map[string]any {
	t.Helper()
	svc, _ := p.status(t)["services"].(map[string]any)[name].(map[string]any)
	return svc
}

// Services declared in MACHINE_SERVICES_FILE are supervised; the HTTP routes restart them and
// show their logs; and a machine killed with SIGKILL finds the service still running when it
// comes back, and re-attaches to it instead of starting another.
func TestServicesSurviveAMachineRestart(t *testing.T) {
	srv := redistest.Start(t)
	dir := t.TempDir()
	svcPort := testutil.Port(t)
	file := filepath.Join(dir, "services.json")
	defs := fmt.Sprintf(`[{"name":"sidecar","command":[%q],"port":%d,"env":{"LOG_EVERY_MS":"50"},
		"probe":{"kind":"http","target":"http://127.0.0.1:%d/"}}]`, testService, svcPort, svcPort)
	if err := os.WriteFile(file, []byte(defs), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HUB_REDIS_URL": srv.URL, "MACHINE_ID": "box", "WORKER_CONNECTORS": "mock",
		"MACHINE_RUN_DIR": filepath.Join(dir, "run"), "MACHINE_LOG_DIR": filepath.Join(dir, "logs"),
		"MACHINE_SERVICES_FILE": file, "MACHINE_KEEP_SERVICES": "true", "MACHINE_API_TOKEN": testToken}
	first := startMachine(t, env)
	waitUntil(t, "the service to be online", func() bool { return service(t, first, "sidecar")["status"] == "online" })
	base := first.URL("")
	waitUntil(t, "its log lines", func() bool {
		code, body := httpDo(t, "GET", base+"/pm2/logs?service=sidecar&lines=3")
		return code == 200 && strings.Count(body, "tick") == 3
	})
	pid := service(t, first, "sidecar")["pid"].(float64)
	if code, body := httpDo(t, "POST", base+"/restart/service?service=sidecar"); code != 200 {
		t.Fatalf("restart: %d %s", code, body)
	}
	waitUntil(t, "a restarted service", func() bool {
		s := service(t, first, "sidecar")
		return s["status"] == "online" && s["pid"].(float64) != pid
	})
	pid = service(t, first, "sidecar")["pid"].(float64)
	if code, body := httpDo(t, "GET", base+"/health"); code != 200 || !strings.Contains(body, `"sidecar"`) {
		t.Errorf("/health = %d %s", code, body)
	}

	_ = first.Cmd.Process.Signal(syscall.SIGKILL) // the machine only: its services have groups of their own
	<-first.Done()
	if syscall.Kill(int(pid), 0) != nil {
		t.Fatal("the service died with the machine")
	}
	second := startMachine(t, env)
	waitUntil(t, "the service online again", func() bool { return service(t, second, "sidecar")["status"] == "online" })
	s := service(t, second, "sidecar")
	if s["pid"].(float64) != pid || s["adopted"] != true {
		t.Fatalf("after the restart: %v; want pid %v re-attached", s, pid)
	}
	_ = second.Cmd.Process.Signal(syscall.SIGTERM)
	<-second.Done()
	// KEEP_SERVICES: a clean stop leaves the service for the next machine too. Stop it now.
	_ = syscall.Kill(-int(pid), syscall.SIGKILL)
}

// `machine install` runs the ComfyUI installer for a comfyui plan: here from a local
// repository, twice (the second run finds everything done).
func TestInstallCommand(t *testing.T) {
	repo := t.TempDir()
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"commit", "-q", "--allow-empty", "-m", "init"}} {
		c := exec.Command("git", append([]string{"-C", repo, "-c", "user.email=t@e", "-c", "user.name=t"}, args...)...)
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("git: %v %s", err, out)
		}
	}
	_ = os.WriteFile(filepath.Join(repo, "requirements.txt"), nil, 0o644)
	_ = exec.Command("git", "-C", repo, "-c", "user.email=t@e", "-c", "user.name=t", "add", ".").Run()
	_ = exec.Command("git", "-C", repo, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q", "-m", "req").Run()
	work := t.TempDir()
	env := map[string]string{"WORKER_CONNECTORS": "comfyui", "MACHINE_GPU_COUNT": "1", "COMFYUI_REPO_URL": "file://" + repo,
		"COMFYUI_BRANCH": "main", "COMFYUI_DIR": filepath.Join(work, "ComfyUI"), "MACHINE_CACHE_DIR": filepath.Join(work, "cache")}
	for run := 1; run <= 2; run++ {
		out, err := command(env, "install").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "comfyui installed") {
			t.Fatalf("install run %d: %v\n%s", run, err, out)
		}
		if run == 2 && strings.Contains(string(out), `"install step started"`) {
			t.Errorf("second install ran steps again:\n%s", out)
		}
	}
	if _, err := os.Stat(filepath.Join(work, "ComfyUI", ".venv", "bin", "python")); err != nil {
		t.Errorf("no venv after install: %v", err)
	}
}

// `console` (the image's link to the binary) attaches; with no machine it names the socket.
func TestConsoleWithoutAMachine(t *testing.T) {
	link := filepath.Join(t.TempDir(), "console")
	if err := os.Symlink(binary, link); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "control.sock")
	cmd := exec.Command(link)
	// The rest of the configuration is broken: the console needs only the socket.
	cmd.Env = []string{"MACHINE_CONTROL_SOCKET=" + sock, "MACHINE_GPU_COUNT=many", "WORKER_CONNECTORS=openai"}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), sock) || !strings.Contains(string(out), "no running machine") {
		t.Errorf("console with no machine: %v\n%s", err, out)
	}
}

// An interval the machine cannot honour is refused with its bounds, before the console dials or
// the machine starts.
func TestConsoleIntervalOutOfRange(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "control.sock")
	for _, args := range [][]string{{"console", "--interval", "500ms"}, {"console", "--interval", "2m0s"}, {"--interval", "500ms"}} {
		interval := args[len(args)-1]
		cmd := exec.Command(binary, args...)
		cmd.Env = []string{"MACHINE_CONTROL_SOCKET=" + sock}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--interval "+interval+" is out of range; give one from 1s to 1m0s") ||
			strings.Contains(string(out), "no running machine") {
			t.Errorf("machine %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
