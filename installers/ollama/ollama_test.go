package ollama_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/emp-job-queue/machine/installers"
	"github.com/emp-job-queue/machine/installers/ollama"
	"github.com/emp-job-queue/machine/internal/testutil"
)

var (
	buildOnce sync.Once
	fakeBin   string
	buildErr  error
)

// fakeOllama builds the fake `ollama` binary once for the package's tests.
func fakeOllama(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fakeollama")
		if err != nil {
			buildErr = err
			return
		}
		fakeBin = filepath.Join(dir, "ollama")
		buildErr = testutil.Build("../../internal/fakeollama/cmd", fakeBin)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return fakeBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fakeBin != "" {
		os.RemoveAll(filepath.Dir(fakeBin))
	}
	os.Exit(code)
}

func answering(port int) bool {
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/api/version")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// Models are pulled through a daemon the installer starts (the real child process), with byte
// progress; a model the registry does not have fails alone with a sentence naming the variable;
// the daemon is gone afterwards; a second boot pulls only what failed.
func TestModelsArePulledAsInstallSteps(t *testing.T) {
	port := testutil.Port(t)
	work := t.TempDir()
	in := ollama.Install{Binary: fakeOllama(t), Port: port, ModelsDir: filepath.Join(work, "models"),
		Models: []string{"llama3.2", "no-such-model", "qwen3:0.6b"}}
	var mu sync.Mutex
	var events []installers.Event
	r := &installers.Runner{MarkerDir: filepath.Join(work, "markers"),
		OnEvent: func(ev installers.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() }}
	bin, err := in.Run(context.Background(), r)
	if bin != fakeOllama(t) {
		t.Errorf("binary = %q", bin)
	}
	var stepErr *installers.StepError
	if !errors.As(err, &stepErr) || len(stepErr.Failures) != 1 {
		t.Fatalf("install = %v; want only the unknown model to fail", err)
	}
	msg := stepErr.Failures["ollama model no-such-model"].Error()
	if !strings.Contains(msg, "file does not exist") || !strings.Contains(msg, "OLLAMA_DEFAULT_MODELS") {
		t.Errorf("failure = %s", msg)
	}
	var last installers.Event
	for _, ev := range events {
		if ev.Step == "ollama model llama3.2" && ev.Phase == installers.Progress {
			last = ev
		}
	}
	if last.Total == 0 || last.Done != last.Total {
		t.Errorf("last progress of llama3.2 = %+v; want the bytes of every layer, complete", last)
	}
	if answering(port) {
		t.Error("the installer's daemon still runs after the install")
	}
	got, _ := os.ReadDir(filepath.Join(work, "models", "fake-manifests"))
	if len(got) != 2 {
		t.Errorf("models on disk: %v", got)
	}

	events = nil
	_, _ = in.Run(context.Background(), r)
	var ran []string
	for _, ev := range events {
		if ev.Phase == installers.Started {
			ran = append(ran, ev.Step)
		}
	}
	if want := []string{"install Ollama", "ollama model no-such-model"}; !slices.Equal(ran, want) {
		t.Errorf("second boot ran %v, want %v", ran, want)
	}
}

// Without a binary and without leave to install one, the error says how to install it.
func TestMissingOllamaSaysHowToInstallIt(t *testing.T) {
	for _, p := range []string{"/usr/local/bin/ollama", "/usr/bin/ollama"} {
		if _, err := os.Stat(p); err == nil {
			t.Skipf("%s exists on this machine", p)
		}
	}
	t.Setenv("PATH", t.TempDir())
	_, err := ollama.Install{Workspace: t.TempDir(), Port: testutil.Port(t)}.Run(context.Background(), &installers.Runner{})
	if !errors.Is(err, ollama.ErrNotInstalled) && !strings.Contains(err.Error(), ollama.ErrNotInstalled.Error()) {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), "curl -fsSL https://ollama.com/install.sh | sh") || !strings.Contains(err.Error(), "OLLAMA_INSTALL=script") {
		t.Errorf("err = %v", err)
	}
	_, err = ollama.Install{Binary: "/nonexistent/ollama"}.Find()
	if err == nil || !strings.Contains(err.Error(), "OLLAMA_BIN /nonexistent/ollama is not an executable file") {
		t.Errorf("bad OLLAMA_BIN: %v", err)
	}
}

// With OLLAMA_INSTALL=script the machine downloads and runs the install script, then finds
// the binary it installed.
func TestInstallScriptIsRunWhenAllowed(t *testing.T) {
	binDir := t.TempDir()
	script := "#!/bin/sh\nset -e\ncp '" + fakeOllama(t) + "' '" + binDir + "/ollama'\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(script)) }))
	defer srv.Close()
	t.Setenv("PATH", binDir+":/usr/bin:/bin")
	bin, err := ollama.Install{ScriptURL: srv.URL + "/install.sh", Port: testutil.Port(t)}.Run(context.Background(), &installers.Runner{})
	if err != nil || bin != filepath.Join(binDir, "ollama") {
		t.Fatalf("bin = %q, err = %v", bin, err)
	}
}

// A port taken by something else makes the daemon exit, and the error says so with its output.
func TestTakenPortIsReported(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	in := ollama.Install{Binary: fakeOllama(t), Port: port, ModelsDir: t.TempDir(), Models: []string{"llama3.2"}}
	_, err = in.Run(context.Background(), &installers.Runner{})
	if err == nil || !strings.Contains(err.Error(), "exited before answering on port") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("err = %v", err)
	}
}

func TestServiceSpec(t *testing.T) {
	in := ollama.Install{ModelsDir: "/workspace/ollama/models", Env: []string{"OLLAMA_KEEP_ALIVE=10m"}}
	spec := ollama.ServiceSpec("/usr/local/bin/ollama", in, "ollama", 11500, 2)
	if strings.Join(spec.Command, " ") != "/usr/local/bin/ollama serve" || spec.Probe.Target != "http://127.0.0.1:11500/api/version" {
		t.Errorf("spec = %+v", spec)
	}
	for _, want := range []string{"OLLAMA_HOST=127.0.0.1:11500", "OLLAMA_MODELS=/workspace/ollama/models", "OLLAMA_KEEP_ALIVE=10m", "OLLAMA_NUM_PARALLEL=2"} {
		if !slices.Contains(spec.Env, want) {
			t.Errorf("env %v lacks %s", spec.Env, want)
		}
	}
	in.Env = append(in.Env, "OLLAMA_NUM_PARALLEL=8")
	if spec := ollama.ServiceSpec("ollama", in, "ollama", 1, 1); slices.Contains(spec.Env, "OLLAMA_NUM_PARALLEL=1") {
		t.Error("the operator's OLLAMA_NUM_PARALLEL was overridden")
	}
}
