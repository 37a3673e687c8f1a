package modelcache_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/modelcache"
)

// files is a local HTTP server serving model files (with range requests, as real hosts do).
type files struct {
	srv      *httptest.Server
	body     map[string][]byte
	requests atomic.Int64
	inflight atomic.Int64
	peak     atomic.Int64
}

func newFiles(t *testing.T) *files {
	f := &files{body: map[string][]byte{}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		n := f.inflight.Add(1)
		defer f.inflight.Add(-1)
		for p := f.peak.Load(); n > p && !f.peak.CompareAndSwap(p, n); p = f.peak.Load() {
		}
		time.Sleep(5 * time.Millisecond) // lets concurrent downloads overlap, so the peak is meaningful
		b, ok := f.body[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, r.URL.Path, time.Time{}, bytes.NewReader(b))
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// model adds a file of size bytes and returns its catalogue entry.
func (f *files) model(name string, size int) modelcache.Model {
	b := bytes.Repeat([]byte(name[:1]), size)
	f.body["/"+name] = b
	sum := sha256.Sum256(b)
	return modelcache.Model{Name: name, URL: f.srv.URL + "/" + name, Size: int64(size), SHA256: hex.EncodeToString(sum[:]), Kind: "checkpoints"}
}

func newCache(t *testing.T, p modelcache.Params, models ...modelcache.Model) *modelcache.Cache {
	t.Helper()
	cat, err := modelcache.NewCatalog(models)
	if err != nil {
		t.Fatal(err)
	}
	p.Catalog = cat
	if p.Dir == "" {
		p.Dir = t.TempDir()
	}
	c, err := modelcache.New(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ensure(t *testing.T, c *modelcache.Cache, name string) func() {
	t.Helper()
	_, release, err := c.Ensure(context.Background(), name, nil)
	if err != nil {
		t.Fatalf("Ensure(%s): %v", name, err)
	}
	return release
}

func TestEnsureDownloadsOnceThenHits(t *testing.T) {
	f := newFiles(t)
	a := f.model("a.safetensors", 1000)
	c := newCache(t, modelcache.Params{Budget: 10_000}, a)
	var reported atomic.Int64
	path, release, err := c.Ensure(context.Background(), a.Name, func(done, total int64) { reported.Store(total) })
	if err != nil {
		t.Fatal(err)
	}
	release()
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, f.body["/a.safetensors"]) || filepath.Base(filepath.Dir(path)) != "checkpoints" {
		t.Fatalf("wrong file at %s", path)
	}
	if reported.Load() != 1000 {
		t.Fatalf("progress reported total %d, want 1000", reported.Load())
	}
	ensure(t, c, a.Name)()
	s := c.Stats()
	if s.Hits != 1 || s.Misses != 1 || s.Downloads != 1 || s.BytesDownloaded != 1000 || s.Used != 1000 {
		t.Fatalf("stats %+v", s)
	}
	if !slices.Equal(c.OnDisk(), []string{a.Name}) {
		t.Fatalf("OnDisk %v", c.OnDisk())
	}
	// A new cache over the same directory adopts what is there.
	again := newCache(t, modelcache.Params{Dir: filepath.Dir(filepath.Dir(path)), Budget: 10_000}, a)
	if !slices.Equal(again.OnDisk(), []string{a.Name}) || again.Stats().Used != 1000 {
		t.Fatalf("reopened cache: %v %+v", again.OnDisk(), again.Stats())
	}
}

func TestConcurrentJobsShareOneDownload(t *testing.T) {
	f := newFiles(t)
	a := f.model("a.ckpt", 5000)
	c := newCache(t, modelcache.Params{Budget: 10_000}, a)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { ensure(t, c, a.Name)() })
	}
	wg.Wait()
	if s := c.Stats(); s.Downloads != 1 || f.requests.Load() != 1 {
		t.Fatalf("%d downloads, %d requests; want 1", s.Downloads, f.requests.Load())
	}
}

func TestBadInputFailsClearlyAndLeavesTheCacheConsistent(t *testing.T) {
	f := newFiles(t)
	good := f.model("good.safetensors", 400)
	bad := f.model("bad.safetensors", 400)
	bad.SHA256 = strings.Repeat("0", 64) // the manifest disagrees with the file
	big := f.model("big.safetensors", 2000)
	c := newCache(t, modelcache.Params{Budget: 1000}, good, bad, big)

	_, _, err := c.Ensure(context.Background(), "nope.safetensors", nil)
	if !errors.Is(err, modelcache.ErrUnknown) || !strings.Contains(err.Error(), "MACHINE_MODEL_CATALOG") {
		t.Fatalf("unknown model: %v", err)
	}
	_, _, err = c.Ensure(context.Background(), bad.Name, nil)
	if err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("checksum mismatch: %v", err)
	}
	_, _, err = c.Ensure(context.Background(), big.Name, nil)
	if !errors.Is(err, modelcache.ErrNoRoom) || !strings.Contains(err.Error(), "MACHINE_MODEL_CACHE_GB") {
		t.Fatalf("model larger than the budget: %v", err)
	}
	if s := c.Stats(); s.Used != 0 || len(c.OnDisk()) != 0 || c.InUse(bad.Name) {
		t.Fatalf("after failures: used %d, on disk %v", s.Used, c.OnDisk())
	}
	var left []string
	root := filepath.Dir(filepath.Dir(mustPath(t, c, good.Name)))
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, _ error) error {
		if !d.IsDir() {
			left = append(left, strings.TrimPrefix(p, root))
		}
		return nil
	})
	if !slices.Equal(left, []string{"/checkpoints/good.safetensors"}) {
		t.Fatalf("files in the cache: %v; want only the good model", left)
	}
}

func mustPath(t *testing.T, c *modelcache.Cache, name string) string {
	t.Helper()
	p, release, err := c.Ensure(context.Background(), name, nil)
	if err != nil {
		t.Fatal(err)
	}
	release()
	return p
}

func TestModelsInUseAndPinnedAreNeverEvicted(t *testing.T) {
	f := newFiles(t)
	a, b, p := f.model("a.ckpt", 600), f.model("b.ckpt", 600), f.model("p.ckpt", 300)
	p.Pinned = true
	c := newCache(t, modelcache.Params{Budget: 1000}, a, b, p)
	ensure(t, c, p.Name)()
	releaseA := ensure(t, c, a.Name)
	if _, _, err := c.Ensure(context.Background(), b.Name, nil); !errors.Is(err, modelcache.ErrNoRoom) {
		t.Fatalf("b while a runs and p is pinned: %v, want ErrNoRoom", err)
	}
	if !slices.Equal(c.OnDisk(), []string{a.Name, p.Name}) {
		t.Fatalf("a failed download evicted something: %v", c.OnDisk())
	}
	releaseA()
	ensure(t, c, b.Name)()
	if !slices.Equal(c.OnDisk(), []string{b.Name, p.Name}) {
		t.Fatalf("after a's job ended: %v, want b and the pinned p", c.OnDisk())
	}
}

type scores map[string]float64

func (s scores) ModelScore(name string) float64 { return s[name] }

// The weighted policy keeps what pending jobs want even when it was used longest ago; LRU
// does not.
func TestEvictionFollowsPolicy(t *testing.T) {
	for _, tc := range []struct {
		policy  modelcache.Policy
		evicted string
	}{
		{modelcache.Weighted, "a.ckpt"}, // b is wanted by pending jobs
		{modelcache.LRU, "b.ckpt"},      // b was used longest ago
	} {
		t.Run(fmt.Sprint(tc.policy), func(t *testing.T) {
			f := newFiles(t)
			a, b, n := f.model("a.ckpt", 500), f.model("b.ckpt", 500), f.model("n.ckpt", 500)
			now := time.Unix(1000, 0)
			c := newCache(t, modelcache.Params{Budget: 1000, Policy: tc.policy, Demand: scores{"b.ckpt": 5},
				Now: func() time.Time { return now }}, a, b, n)
			ensure(t, c, b.Name)()
			now = now.Add(time.Minute)
			ensure(t, c, a.Name)()
			now = now.Add(time.Minute)
			ensure(t, c, n.Name)()
			if slices.Contains(c.OnDisk(), tc.evicted) {
				t.Fatalf("on disk %v; %s should have been evicted", c.OnDisk(), tc.evicted)
			}
		})
	}
}

func TestPrefetchIsBoundedAndNeverEvictsWhatIsWantedMore(t *testing.T) {
	f := newFiles(t)
	var models []modelcache.Model
	want := scores{}
	var names []string
	for i := range 6 {
		m := f.model(fmt.Sprintf("%c.ckpt", 'a'+i), 100)
		models = append(models, m)
		names = append(names, m.Name)
		want[m.Name] = float64(10 - i)
	}
	hot := f.model("hot.ckpt", 200)
	models = append(models, hot)
	want[hot.Name] = 100
	c := newCache(t, modelcache.Params{Budget: 600, MaxDownloads: 2, Demand: want}, models...)
	ensure(t, c, hot.Name)()
	fetched, err := c.Prefetch(context.Background(), names)
	if err != nil {
		t.Fatal(err)
	}
	if p := f.peak.Load(); p > 2 {
		t.Fatalf("%d downloads at once, bound 2", p)
	}
	if !slices.Contains(c.OnDisk(), hot.Name) {
		t.Fatalf("prefetch evicted the most wanted model: %v", c.OnDisk())
	}
	if len(fetched) < 4 || c.Stats().Used > 600 {
		t.Fatalf("fetched %v, used %d of 600", fetched, c.Stats().Used)
	}
	if !slices.Contains(fetched, "a.ckpt") || !slices.Contains(c.OnDisk(), "a.ckpt") {
		t.Fatalf("the most wanted prefetch candidate is missing: fetched %v, on disk %v", fetched, c.OnDisk())
	}
}

func TestCatalogReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "models.json")
	os.WriteFile(path, []byte(`{"models":[{"name":"../x","url":"http://h/x","size":1,"sha256":"`+strings.Repeat("a", 64)+`","kind":"loras"},
		{"name":"ok.ckpt","url":"ftp://h","size":1,"sha256":"`+strings.Repeat("a", 64)+`","kind":"checkpoints"},
		{"name":"y.ckpt","url":"http://h/y","size":1,"sha256":"zz","kind":"checkpoints"}]}`), 0o644)
	_, err := modelcache.LoadCatalog(path)
	if err == nil {
		t.Fatal("a bad catalogue loaded")
	}
	for _, want := range []string{`"../x"`, "ftp://h", `"zz"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}
