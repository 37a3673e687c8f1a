package machine_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/core/machine"
)

// modelFiles is a real HTTP server serving model files, and the catalogue that names them.
type modelFiles struct {
	srv     *httptest.Server
	body    map[string][]byte
	catalog string // the catalogue file
	dir     string // MACHINE_MODEL_CACHE_DIR
}

type catalogEntry struct {
	Name   string `json:"name"`
	URL    string `json:"url"`
	Size   int    `json:"size"`
	SHA256 string `json:"sha256"`
	Kind   string `json:"kind"`
}

// newModelFiles serves good.safetensors and wanted.safetensors with their right sha256, and
// bad.safetensors whose catalogue sha256 is another file's.
func newModelFiles(t *testing.T) *modelFiles {
	t.Helper()
	f := &modelFiles{body: map[string][]byte{}, dir: t.TempDir()}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := f.body[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, r.URL.Path, time.Time{}, bytes.NewReader(b))
	}))
	t.Cleanup(f.srv.Close)
	var entries []catalogEntry
	for _, name := range []string{"good.safetensors", "bad.safetensors", "wanted.safetensors"} {
		b := bytes.Repeat([]byte(name[:1]), 64<<10)
		f.body["/"+name] = b
		sum := sha256.Sum256(b)
		if name == "bad.safetensors" {
			sum = sha256.Sum256([]byte("another file"))
		}
		entries = append(entries, catalogEntry{Name: name, URL: f.srv.URL + "/" + name, Size: len(b), SHA256: hex.EncodeToString(sum[:]), Kind: "checkpoints"})
	}
	data, _ := json.Marshal(map[string]any{"models": entries})
	f.catalog = filepath.Join(t.TempDir(), "catalog.json")
	if err := os.WriteFile(f.catalog, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *modelFiles) env(prefetch string) map[string]string {
	return map[string]string{"WORKER_CONNECTORS": "simulation", "MACHINE_MODEL_CACHE_GB": "1",
		"MACHINE_MODEL_CATALOG": f.catalog, "MACHINE_MODEL_CACHE_DIR": f.dir, "MACHINE_MODEL_PREFETCH": prefetch}
}

// workflow is a ComfyUI-like payload whose checkpoint loader names model.
func workflow(model string) string {
	return fmt.Sprintf(`{"workflow":{"4":{"class_type":"CheckpointLoaderSimple","inputs":{"ckpt_name":%q}}}}`, model)
}

// messages collects what a channel publishes.
type messages struct {
	mu  sync.Mutex
	got []string
}

func (h *harness) listen(channel string) *messages {
	h.t.Helper()
	sub := h.rdb.Subscribe(context.Background(), channel)
	if _, err := sub.Receive(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { sub.Close() })
	m := &messages{}
	go func() {
		for msg := range sub.Channel() {
			m.mu.Lock()
			m.got = append(m.got, msg.Payload)
			m.mu.Unlock()
		}
	}()
	return m
}

func (m *messages) all() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.got)
}

func (m *messages) find(sub string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, g := range m.got {
		if strings.Contains(g, sub) {
			return g
		}
	}
	return ""
}

func TestJobDownloadsItsMissingModelFirst(t *testing.T) {
	f := newModelFiles(t)
	h := start(t, f.env("0"))
	progress := h.listen("update_job_progress")
	statuses := h.listen("machine:status:test-box")
	ctx := context.Background()

	id := h.submit("simulation", workflow("good.safetensors"))
	h.waitFor("the job to complete", func() bool { return h.status(id) == "completed" })
	if msg := progress.find("downloading model good.safetensors"); msg == "" || !strings.Contains(msg, id) {
		t.Errorf("no progress of job %s says it downloads its model: %q", id, progress.all())
	}
	path := filepath.Join(f.dir, "checkpoints", "good.safetensors")
	if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, f.body["/good.safetensors"]) {
		t.Fatalf("the model is not in the shared cache directory: %v", err)
	}
	mc := h.m.Store().Snapshot().ModelCache
	if !mc.On || mc.Misses != 1 || mc.Downloads != 1 || !slices.Contains(mc.OnDisk, "good.safetensors") {
		t.Fatalf("the state store does not show the download: %+v", mc)
	}
	// The models of the last job on a GPU are taken to be in its VRAM.
	snap := h.m.Store().Snapshot()
	gpu := -1
	for _, s := range snap.Slots {
		if s.ID == snap.Recent[0].SlotID {
			gpu = s.GPU
		}
	}
	if !slices.Equal(mc.InVRAM[gpu], []string{"good.safetensors"}) {
		t.Errorf("in_vram = %v, want GPU %d to hold the job's checkpoint", mc.InVRAM, gpu)
	}

	if c := h.m.Control().Snapshot().ModelCache; !c.On || c.OnDisk != 1 || c.Misses != 1 || c.UsedBytes != 64<<10 {
		t.Errorf("the console's snapshot does not show the cache: %+v", c)
	}

	// A second job finds it on disk: a hit, no download.
	id2 := h.submit("simulation", workflow("good.safetensors"))
	h.waitFor("the second job to complete", func() bool { return h.status(id2) == "completed" })
	if mc := h.m.Store().Snapshot().ModelCache; mc.Hits != 1 || mc.Downloads != 1 {
		t.Errorf("the second job downloaded again: %+v", mc)
	}

	// A name the catalogue does not have is left to the service: the job runs.
	id3 := h.submit("simulation", workflow("installed-by-hand.safetensors"))
	h.waitFor("the job with an uncatalogued model to complete", func() bool { return h.status(id3) == "completed" })

	// Advertised: the capabilities list the catalogue (claims match requirements.models against
	// them), machine:status and /status what is on disk.
	var caps struct {
		Models map[string][]string `json:"models"`
	}
	slot := h.m.Store().Snapshot().Slots[0].ID
	_ = json.Unmarshal([]byte(h.rdb.HGet(ctx, "worker:"+slot, "capabilities").Val()), &caps)
	for _, name := range []string{"good.safetensors", "wanted.safetensors"} {
		if !slices.Contains(caps.Models["simulation"], name) {
			t.Errorf("capabilities models = %v, want %s", caps.Models, name)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for statuses.find(`"models":{"on_disk":["good.safetensors"],"downloading":[],"in_vram":{`) == "" || statuses.find(`["installed-by-hand.safetensors"]`) == "" {
		if time.Now().After(deadline) {
			all := statuses.all()
			t.Fatalf("machine:status does not advertise the models; the last of %d messages: %s", len(all), all[len(all)-1])
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Get("http://" + h.m.HTTPAddr() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var st struct {
		ModelCache struct {
			On          bool     `json:"on"`
			UsedBytes   int64    `json:"used_bytes"`
			BudgetBytes int64    `json:"budget_bytes"`
			Hits        int64    `json:"hits"`
			OnDisk      []string `json:"on_disk"`
		} `json:"model_cache"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	if c := st.ModelCache; !c.On || c.UsedBytes != 64<<10 || c.BudgetBytes != 1<<30 || c.Hits != 1 || !slices.Equal(c.OnDisk, []string{"good.safetensors"}) {
		t.Errorf("/status model_cache = %+v", c)
	}
	metrics, _ := http.Get("http://" + h.m.HTTPAddr() + "/metrics")
	mbody, _ := io.ReadAll(metrics.Body)
	metrics.Body.Close()
	for _, want := range []string{`machine_model_cache_lookups_total{result="hit"} 1`, `machine_model_cache_downloads_total 1`, `machine_model_cache_bytes{kind="used"} 65536`} {
		if !strings.Contains(string(mbody), want) {
			t.Errorf("/metrics lacks %s:\n%s", want, grep(string(mbody), "model_cache"))
		}
	}
}

func TestChecksumMismatchFailsTheJobAndLeavesTheCacheAsItWas(t *testing.T) {
	f := newModelFiles(t)
	h := start(t, f.env("0"))
	id := h.submit("simulation", workflow("bad.safetensors"))
	errText, retries := h.failed(id)
	if !strings.Contains(errText, "bad.safetensors") || !strings.Contains(errText, "checksum mismatch") {
		t.Errorf("the failure does not say what is wrong: %q", errText)
	}
	if retries != 1 {
		t.Errorf("a checksum mismatch was retried (retry_count %v): every machine would fetch the same file", retries)
	}
	// Nothing visible: no model file, no partial download, no reservation.
	var left []string
	_ = filepath.WalkDir(f.dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("the refused download left files behind: %v", left)
	}
	mc := h.m.Store().Snapshot().ModelCache
	if mc.UsedBytes != 0 || len(mc.OnDisk) != 0 || len(mc.Downloading) != 0 || mc.Downloads != 0 {
		t.Errorf("the cache is not as it was: %+v", mc)
	}
	// The cache still works.
	ok := h.submit("simulation", workflow("good.safetensors"))
	h.waitFor("the next job to complete", func() bool { return h.status(ok) == "completed" })
}

func TestPrefetchFetchesWhatPendingJobsWant(t *testing.T) {
	f := newModelFiles(t)
	h := start(t, f.env("2"))
	// Drained: the job stays pending, so only the prefetch can fetch its model.
	if res := h.m.Control().Do(context.Background(), control.Command{Op: control.Drain}); !res.OK {
		t.Fatal(res.Error)
	}
	id := h.submit("simulation", workflow("wanted.safetensors"))
	h.waitFor("the prefetch to fetch the pending job's model", func() bool {
		return slices.Contains(h.m.Store().Snapshot().ModelCache.OnDisk, "wanted.safetensors")
	})
	if s := h.status(id); s != "pending" {
		t.Fatalf("the job is %s, want pending: a slot fetched the model, not the prefetch", s)
	}
	if mc := h.m.Store().Snapshot().ModelCache; mc.Misses != 0 || mc.Downloads != 1 {
		t.Errorf("prefetch figures = %+v, want one download and no job miss", mc)
	}
	h.m.Control().Do(context.Background(), control.Command{Op: control.Resume})
	h.waitFor("the job to complete", func() bool { return h.status(id) == "completed" })
	if mc := h.m.Store().Snapshot().ModelCache; mc.Hits != 1 || mc.Downloads != 1 {
		t.Errorf("the job did not find its prefetched model: %+v", mc)
	}
}

func TestModelCacheSettingsRefusedClearly(t *testing.T) {
	f := newModelFiles(t)
	broken := filepath.Join(t.TempDir(), "broken.json")
	if err := os.WriteFile(broken, []byte(`{"models":[{"name":"x.safetensors","url":"ftp://x","size":1,"sha256":"00","kind":"checkpoints"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		env  map[string]string
		want string
	}{
		"broken catalogue": {map[string]string{"MACHINE_MODEL_CATALOG": broken}, "must be http(s)"},
		"pinned unknown":   {map[string]string{"MACHINE_MODEL_PINNED": "nope.safetensors"}, "MACHINE_MODEL_PINNED has nope.safetensors"},
	} {
		t.Run(name, func(t *testing.T) {
			env := f.env("0")
			env["MACHINE_RUN_DIR"], env["MACHINE_CACHE_DIR"] = t.TempDir(), t.TempDir()
			for k, v := range tc.env {
				env[k] = v
			}
			cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
			if err != nil {
				t.Fatal(err)
			}
			if err := machine.CheckModelCache(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CheckModelCache = %v, want an error saying %q", err, tc.want)
			}
			_, err = machine.New(cfg, machine.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error saying %q", err, tc.want)
			}
		})
	}
	// Off: no model cache in the state.
	h := start(t, map[string]string{"WORKER_CONNECTORS": "simulation"})
	if h.m.Store().Snapshot().ModelCache.On {
		t.Error("a machine without MACHINE_MODEL_CACHE_GB has a model cache")
	}
}

// A model that cannot fit fails the attempt with a sentence saying what to change, and the job
// is retried (another machine may have room); nothing is left in the cache.
func TestModelThatCannotFitIsRetried(t *testing.T) {
	f := newModelFiles(t)
	env := f.env("0")
	env["MACHINE_MODEL_CACHE_GB"] = "0.00001" // about 10 KB: less than the 64 KB model
	env["WORKER_RETRY_BACKOFF_SECONDS"] = "0"
	h := start(t, env)
	ctx := context.Background()
	two := 2
	id, err := h.b.Submit(ctx, broker.JobSpec{Service: "simulation", Payload: json.RawMessage(workflow("good.safetensors")), MaxRetries: &two})
	if err != nil {
		t.Fatal(err)
	}
	errText, retries := h.failed(id)
	if !strings.Contains(errText, "good.safetensors") || !strings.Contains(errText, "raise MACHINE_MODEL_CACHE_GB") {
		t.Errorf("the failure does not say what to change: %q", errText)
	}
	if retries != 2 {
		t.Errorf("retry_count = %v, want 2: a full cache must leave the job its retries", retries)
	}
	if mc := h.m.Store().Snapshot().ModelCache; mc.UsedBytes != 0 || len(mc.OnDisk) != 0 || mc.Downloads != 0 {
		t.Errorf("the cache is not as it was: %+v", mc)
	}
}
