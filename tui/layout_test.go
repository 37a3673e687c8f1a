package tui_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/charmbracelet/x/ansi"

	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/tui"
)

// busy is a machine that has run jobs on two simulated GPUs for 60 s: 60 one-second samples
// of every history, two services with CPU and RSS, and a log tail.
func busy() (control.Snapshot, []string) {
	snap := fixture()
	series := func(n int, f func(i int) float64) []float64 {
		out := make([]float64, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	for g := range snap.GPUs {
		d := &snap.GPUs[g].Detail
		snap.GPUs[g].History = series(60, func(i int) float64 { return float64((i*7 + g*30) % 100) })
		d.MemHistory = series(60, func(i int) float64 { return 40000 + float64(i*500) })
		d.TempHistory = series(60, func(i int) float64 { return 40 + float64(i%30) })
		d.PowerHistory = series(60, func(i int) float64 { return 200 + float64(i*5) })
		d.UUID = fmt.Sprintf("GPU-fake-%d", g)
	}
	for s := range snap.Services {
		d := &snap.Services[s].Detail
		cpu, rss := 12.0+float64(s), 2048.0+float64(s*100)
		d.CPUPercent, d.RSSMB = &cpu, &rss
		d.CPUHistory = series(60, func(i int) float64 { return float64(i % 40) })
		d.RSSHistory = series(60, func(i int) float64 { return 2000 + float64(i) })
		d.Command, d.GPU, d.Probe = []string{"python", "main.py", "--port", fmt.Sprint(8188 + s)}, s, fmt.Sprintf("http http://127.0.0.1:%d/", 8188+s)
	}
	snap.Trends = control.Trends{StepMS: 1000,
		QueueDepth: series(60, func(i int) float64 { return float64(60 - i) }),
		JobsPerMin: series(60, func(i int) float64 { return float64(i) / 2 }),
		HostCPU:    series(60, func(i int) float64 { return float64(20 + i%10) }),
	}
	snap.Host.Cores = 16
	snap.Jobs[0].Detail = control.JobDetail{Customer: "acme", Priority: "50", Requirements: `{"hardware":{"gpu_memory_gb":24}}`,
		CreatedMS: 1767225600000, StartedMS: 1767225602500, Attempt: 2, MaxRetries: 3,
		Payload: []control.Field{{Key: "api_key", Value: "‹cut: secret›"}, {Key: "prompt", Value: `"a lighthouse at dusk"`}, {Key: "steps", Value: "30"}},
		Steps:   []control.Step{{AtMS: 1767225603000, Percent: 10, Message: "KSampler 3/30"}, {AtMS: 1767225606000, Percent: 30, Message: "KSampler 9/30"}}}
	snap.Recent[1].Slot, snap.Recent[1].EndedMS = "gpu-box-17-worker-comfyui-1", 1767225500000
	snap.Recent[1].Detail = control.JobDetail{Customer: "acme", Attempt: 4, MaxRetries: 3, CreatedMS: 1767225400000, StartedMS: 1767225455000}
	snap.Services[1].Detail.Exits = []control.Exit{{AtMS: 1767225000000, Reason: "signal: killed (memory watermark)"}}
	snap.Slots = []control.Slot{
		{ID: "gpu-box-17-worker-comfyui-0", Connector: "comfyui", GPU: 0, Status: "busy", JobID: snap.Jobs[0].ID, Completed: 60, Failed: 1},
		{ID: "gpu-box-17-worker-comfyui-1", Connector: "comfyui", GPU: 1, Status: "idle", Completed: 58, Failed: 2, IdleMS: 4000,
			LastError: "execution_error: CUDA out of memory"},
	}
	snap.Connectors[1].Throttle = &control.Throttle{Throttled: true, Why: "3 × 429 in the last minute", RateLimited1m: 3,
		RateLimitedTotal: 12, RetryAfterMS: 20000, RetryAfterAtMS: 1767225601000, Breaker: "closed", BreakerSinceMS: 1767225000000,
		Errors: []control.APIError{{AtMS: 1767225601000, Text: "OpenAI answered 429 Too Many Requests: " +
			`{"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-*** on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms.","type":"requests","code":"rate_limit_exceeded"}}`}}}
	snap.Jobs = append(snap.Jobs, control.Job{ID: "a1b2c3d4-0000", Slot: "gpu-box-17-worker-simulation-1", Connector: "simulation",
		Service: "simulation", GPU: 1, Progress: 55, Message: "step 22/40", ElapsedMS: 8000})
	snap.GPUs[1].Jobs = []string{"a1b2c3d4-0000"}
	var logs []string
	for i := 1; i <= 40; i++ {
		logs = append(logs, fmt.Sprintf("got prompt %d; Prompt executed in 1.%d seconds", i, i%10))
	}
	return snap, logs
}

// No line is wider than the screen and no frame taller, at every size from 80×24 to 240×67
// and on every screen.
func TestNothingOverflowsAtAnySize(t *testing.T) {
	snap, logs := busy()
	screens := []tui.Screen{tui.MainScreen, tui.HelpScreen, tui.LogsScreen}
	for w := 80; w <= 240; w += 7 {
		for h := 24; h <= 67; h += 5 {
			for _, sc := range screens {
				check(t, fmt.Sprintf("screen %d at %d×%d", sc, w, h), tui.Frame(snap, sc, "comfyui-gpu0", logs, w, h), w, h)
			}
			for _, d := range describeTargets() {
				check(t, fmt.Sprintf("describe %s at %d×%d", d.key, w, h), tui.DescribeFrame(snap, d.kind, d.key, w, h), w, h)
			}
		}
	}
}

func check(t *testing.T, what, frame string, w, h int) {
	t.Helper()
	lines := strings.Split(frame, "\n")
	if len(lines) > h {
		t.Errorf("%s: %d lines", what, len(lines))
	}
	for i, l := range lines {
		if n := ansi.StringWidth(l); n > w {
			t.Errorf("%s: line %d is %d cells wide: %q", what, i, n, ansi.Strip(l))
			return
		}
	}
}

type describeTarget struct {
	kind tui.Kind
	key  string
}

func describeTargets() []describeTarget {
	return []describeTarget{{tui.DescribeGPU, "0"}, {tui.DescribeService, "comfyui-gpu0"}, {tui.DescribeConnector, "comfyui"}, {tui.DescribeConnector, "openai"},
		{tui.DescribeJob, "7f3a9c21-5e0b-4d7e-9a1c-2b8d6e4f0a13"}, {tui.DescribeJob, "deadbeef-bbbb"}, {tui.DescribeDecisions, ""}}
}

// At 160×48, with 60 s of jobs on two GPUs, the main screen uses its rows: at least 44 of the
// 48 carry content, and the GPU graphs span at least half the width.
func TestLargeLayoutFillsTheScreen(t *testing.T) {
	snap, logs := busy()
	frame := tui.Frame(snap, tui.MainScreen, "comfyui-gpu0", logs, 160, 48)
	lines := strings.Split(ansi.Strip(frame), "\n")
	filled := 0
	for _, l := range lines {
		if strings.TrimSpace(l) != "" {
			filled++
		}
	}
	if filled < 44 {
		t.Errorf("%d of 48 rows carry content, want ≥ 44:\n%s", filled, strings.Join(lines, "\n"))
	}
	// The first time axis under GPU 0's row spans its utilization and memory graphs.
	var axis string
	for i, l := range lines {
		if strings.Contains(l, "GPU 0 utilization") {
			for _, a := range lines[i:] {
				if strings.Contains(a, "-5m00s") && strings.Count(a, "now") >= 2 {
					axis = a
					break
				}
			}
		}
	}
	r := []rune(axis)
	nows := 0
	end := -1
	for i := range r {
		if strings.HasPrefix(string(r[i:]), "now") {
			if nows++; nows == 2 {
				end = i + 3
			}
		}
	}
	if start := strings.Index(axis, "-5m00s"); start < 0 || end-start < 80 {
		t.Errorf("the GPU graphs do not span half the width: %q", axis)
	}
	for _, want := range []string{"queue depth", "jobs/min", "host CPU", "Decisions", "autoscaler: off", "got prompt 40", "cpu   12%", "power"} {
		if !strings.Contains(strings.Join(lines, "\n"), want) {
			t.Errorf("the large layout lacks %q", want)
		}
	}
}

// The Decisions line shows the autoscaler's latest decision with its reason and the demand it
// sees, from the control snapshot.
func TestDecisionsLineShowsTheAutoscaler(t *testing.T) {
	snap, logs := busy()
	snap.Autoscaler = control.Autoscaler{On: true, Pending: 3, Queue: 5, Count: 1, Last: &control.Decision{
		What: "enable mock to 1 slot(s)", Reason: "pre-warm: 3 job(s) wait", Outcome: "queued as change 2", AgeMS: 12_000}}
	frame := ansi.Strip(tui.Frame(snap, tui.MainScreen, "comfyui-gpu0", logs, 200, 48))
	for _, want := range []string{"autoscaler: enable mock to 1 slot(s) 12s ago (pre-warm", "demand: 3 pending of 5 queued"} {
		if !strings.Contains(frame, want) {
			t.Errorf("the frame lacks %q:\n%s", want, frame)
		}
	}
}

// The model cache's figures show in both layouts: on the Decisions title of the compact one, on
// the Decisions line of the large one; "off" without a cache.
func TestModelCacheShown(t *testing.T) {
	snap, logs := busy()
	want := "model cache: 3 on disk, 1.5/200.0 GB, 75% hits, downloading sdxl.safetensors"
	if frame := ansi.Strip(tui.Frame(snap, tui.MainScreen, "comfyui-gpu0", logs, 200, 48)); !strings.Contains(frame, "model cache: off") {
		t.Errorf("without a cache the frame does not say it is off:\n%s", frame)
	}
	snap.ModelCache = control.ModelCache{On: true, UsedBytes: 3 << 29, BudgetBytes: 200 << 30, Hits: 3, Misses: 1,
		OnDisk: 3, Downloading: []string{"sdxl.safetensors"}}
	for _, size := range [][2]int{{200, 48}, {120, 30}} {
		if frame := ansi.Strip(tui.Frame(snap, tui.MainScreen, "comfyui-gpu0", logs, size[0], size[1])); !strings.Contains(frame, want) {
			t.Errorf("the %dx%d frame lacks %q:\n%s", size[0], size[1], want, frame)
		}
	}
}
