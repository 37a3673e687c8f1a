// Package modelcache keeps the models jobs need in one cache directory shared by every GPU's
// ComfyUI instance (point its extra_model_paths.yaml at the directory), within a disk budget.
//
// Models come from a catalogue (name → url, size, sha256, kind) and are downloaded with the
// installers' resumable, checksummed downloader. When a model does not fit, the cache evicts
// the models worth least: by default those with the lowest (recent uses + predicted demand) per
// square root of size, so one huge, idle checkpoint goes before many small, busy LoRAs; with
// Policy LRU, simply the least recently used. Pinned models and models in use by a running job
// (Ensure until its release) are never evicted. A download that cannot fit even after every
// evictable model is gone fails with ErrNoRoom and evicts nothing.
package modelcache

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/emp-job-queue/machine/installers"
)

// Policy is how the cache chooses what to evict.
type Policy int

const (
	Weighted Policy = iota // recent uses, predicted demand and size
	LRU                    // least recently used first (the simulation's baseline)
)

// Predictor predicts the demand for a model; core/demand's Tracker is one.
type Predictor interface {
	ModelScore(name string) float64
}

// Errors a caller can tell apart with errors.Is.
var (
	ErrUnknown = errors.New("unknown model")
	ErrNoRoom  = errors.New("model cache full")
	// ErrChecksum: the downloaded file did not match the catalogue's sha256 and was discarded.
	ErrChecksum = installers.ErrChecksumMismatch
)

// Params configure a Cache.
type Params struct {
	Dir          string // the shared cache: <Dir>/<kind>/<name>, downloads in <Dir>/.downloads
	Budget       int64  // bytes (MACHINE_MODEL_CACHE_GB)
	Catalog      Catalog
	Pinned       []string  // never evicted, besides the catalogue's pinned entries
	Demand       Predictor // nil: no prediction
	Policy       Policy
	Client       *http.Client
	MaxDownloads int           // prefetch downloads at once (the bandwidth bound); 2
	HalfLife     time.Duration // of the use count; 10 minutes
	Now          func() time.Time
	Log          *slog.Logger
}

// Stats are the cache's counters.
type Stats struct {
	Hits            int64 `json:"hits"`   // Ensure found the model on disk
	Misses          int64 `json:"misses"` // Ensure had to wait for a download
	Downloads       int64 `json:"downloads"`
	BytesDownloaded int64 `json:"bytes_downloaded"`
	Evictions       int64 `json:"evictions"`
	Used            int64 `json:"used_bytes"` // on disk or reserved by downloads under way
	Budget          int64 `json:"budget_bytes"`
}

// Cache is the model cache. Its methods are safe for concurrent use.
type Cache struct {
	p      Params // immutable after New
	dl     *installers.Downloader
	pinned map[string]bool

	mu    sync.Mutex
	items map[string]*item // on disk or downloading
	refs  map[string]int   // running jobs using each model
	used  int64
	stats Stats
}

type item struct {
	model   Model
	present bool
	loading chan struct{} // closed when the download ends; nil when none runs
	err     error         // the download's, read after loading is closed
	last    time.Time
	uses    float64 // halving every half-life, as of last
}

// New opens the cache in p.Dir and adopts the catalogue's models already there.
func New(p Params) (*Cache, error) {
	if p.Now == nil {
		p.Now = time.Now
	}
	if p.Log == nil {
		p.Log = slog.Default()
	}
	if p.MaxDownloads <= 0 {
		p.MaxDownloads = 2
	}
	if p.HalfLife <= 0 {
		p.HalfLife = 10 * time.Minute // short enough to follow a shift of demand
	}
	if p.Budget <= 0 {
		return nil, fmt.Errorf("the model cache needs a disk budget: set MACHINE_MODEL_CACHE_GB to the GB it may use, e.g. 200")
	}
	if err := os.MkdirAll(filepath.Join(p.Dir, ".downloads"), 0o755); err != nil {
		return nil, fmt.Errorf("create the model cache %s: %w", p.Dir, err)
	}
	c := &Cache{p: p, pinned: map[string]bool{}, items: map[string]*item{}, refs: map[string]int{}}
	c.dl = &installers.Downloader{Cache: filepath.Join(p.Dir, ".downloads"), Client: p.Client}
	for _, n := range p.Pinned {
		c.pinned[n] = true
	}
	now := p.Now()
	for name, m := range p.Catalog {
		if m.Pinned {
			c.pinned[name] = true
		}
		// A file at its final path was checked before it was renamed there; its size guards
		// against a file someone else truncated.
		if fi, err := os.Stat(c.path(m)); err == nil && fi.Mode().IsRegular() && fi.Size() == m.Size {
			c.items[name] = &item{model: m, present: true, last: now}
			c.used += m.Size
		}
	}
	return c, nil
}

func (c *Cache) path(m Model) string { return filepath.Join(c.p.Dir, m.Kind, m.Name) }

func (c *Cache) object(m Model) string { return filepath.Join(c.p.Dir, ".downloads", m.SHA256) }

// Ensure makes the model available to a running job and returns its path and a release
// function the job calls when it ends; until then the model is never evicted. A missing model
// is downloaded first, progress reporting its bytes (the job says so in its progress).
func (c *Cache) Ensure(ctx context.Context, name string, progress func(done, total int64)) (string, func(), error) {
	c.mu.Lock()
	m, ok := c.p.Catalog[name]
	if !ok {
		c.mu.Unlock()
		return "", nil, fmt.Errorf("%w %q: it is not in the model catalogue (MACHINE_MODEL_CATALOG); add its url, size and sha256 there, or fix the job", ErrUnknown, name)
	}
	c.refs[name]++
	it := c.items[name]
	hit := it != nil && it.present
	if hit {
		c.stats.Hits++
		c.touch(it)
	} else {
		c.stats.Misses++
	}
	c.mu.Unlock()
	var once sync.Once
	release := func() {
		once.Do(func() {
			c.mu.Lock()
			if c.refs[name]--; c.refs[name] <= 0 {
				delete(c.refs, name)
			}
			c.mu.Unlock()
		})
	}
	if !hit {
		if err := c.load(ctx, m, math.Inf(1), progress); err != nil {
			release()
			return "", nil, err
		}
		c.mu.Lock()
		if it := c.items[name]; it != nil {
			c.touch(it) // a use like any other: a model just fetched for a job is not the first to go
		}
		c.mu.Unlock()
	}
	return c.path(m), release, nil
}

// touch records a use. Called with mu held.
func (c *Cache) touch(it *item) {
	now := c.p.Now()
	it.uses = c.decayedUses(it, now) + 1
	it.last = now
}

func (c *Cache) decayedUses(it *item, now time.Time) float64 {
	dt := now.Sub(it.last)
	if dt <= 0 {
		return it.uses
	}
	return it.uses * math.Exp2(-float64(dt)/float64(c.p.HalfLife))
}

// keep is what a model is worth keeping; the lowest goes first. Called with mu held.
func (c *Cache) keep(name string, it *item, now time.Time) float64 {
	if c.p.Policy == LRU {
		return float64(it.last.UnixNano())
	}
	demand := 0.0
	if c.p.Demand != nil {
		demand = c.p.Demand.ModelScore(name)
	}
	// Size relative to the budget: only the ratio between models matters.
	rel := float64(it.model.Size) / float64(c.p.Budget)
	return (c.decayedUses(it, now) + 4*demand) / math.Sqrt(rel)
}

// load downloads m unless it is on disk, waiting for a download already under way. Room is
// made by evicting models worth less than below (+Inf: anything evictable).
func (c *Cache) load(ctx context.Context, m Model, below float64, progress func(done, total int64)) error {
	c.mu.Lock()
	it := c.items[m.Name]
	if it != nil && it.present {
		c.mu.Unlock()
		return nil
	}
	if it != nil && it.loading != nil {
		ch := it.loading
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
			return it.err
		}
	}
	if err := c.makeRoom(m, below); err != nil {
		c.mu.Unlock()
		return err
	}
	it = &item{model: m, loading: make(chan struct{}), last: c.p.Now()}
	c.items[m.Name] = it
	c.used += m.Size
	c.mu.Unlock()

	err := c.dl.Fetch(ctx, m.URL, m.SHA256, c.path(m), progress)
	if err == nil {
		// The object in .downloads and the path are one file (a hard link); keep one name.
		if fi, serr := os.Lstat(c.path(m)); serr == nil && fi.Mode().IsRegular() {
			_ = os.Remove(c.object(m))
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		// Leave the cache as it was: no reservation, no partial file (a cancelled download
		// keeps its .part so the next attempt resumes it).
		c.used -= m.Size
		delete(c.items, m.Name)
		_ = os.Remove(c.path(m))
		if ctx.Err() == nil {
			_ = os.Remove(c.object(m) + ".part")
		}
		it.err = fmt.Errorf("model %s: %w", m.Name, err)
		close(it.loading)
		return it.err
	}
	c.stats.Downloads++
	c.stats.BytesDownloaded += m.Size
	close(it.loading)
	it.present, it.loading = true, nil
	return nil
}

// makeRoom evicts until m fits, or evicts nothing and says why not. Called with mu held.
func (c *Cache) makeRoom(m Model, below float64) error {
	if m.Size > c.p.Budget {
		return fmt.Errorf("%w: model %s needs %s but the whole cache budget is %s; raise MACHINE_MODEL_CACHE_GB", ErrNoRoom, m.Name, gb(m.Size), gb(c.p.Budget))
	}
	need := c.used + m.Size - c.p.Budget
	if need <= 0 {
		return nil
	}
	now := c.p.Now()
	type cand struct {
		name string
		keep float64
		size int64
	}
	var cands []cand
	for name, it := range c.items {
		if !it.present || c.pinned[name] || c.refs[name] > 0 {
			continue
		}
		if k := c.keep(name, it, now); k < below {
			cands = append(cands, cand{name, k, it.model.Size})
		}
	}
	slices.SortFunc(cands, func(a, b cand) int { return cmp.Or(cmp.Compare(a.keep, b.keep), cmp.Compare(a.name, b.name)) })
	var free int64
	n := 0
	for n < len(cands) && free < need {
		free += cands[n].size
		n++
	}
	if free < need {
		return fmt.Errorf("%w: model %s needs %s but only %s of the %s budget can be freed (the rest is pinned, in use by running jobs, or being downloaded); raise MACHINE_MODEL_CACHE_GB or pin fewer models",
			ErrNoRoom, m.Name, gb(m.Size), gb(c.p.Budget-c.used+free), gb(c.p.Budget))
	}
	for _, v := range cands[:n] {
		c.evict(v.name)
	}
	return nil
}

// evict removes a model from disk. Called with mu held.
func (c *Cache) evict(name string) {
	it := c.items[name]
	if err := os.Remove(c.path(it.model)); err != nil && !errors.Is(err, os.ErrNotExist) {
		c.p.Log.Warn("model cache: could not remove an evicted model", "model", name, "err", err)
	}
	_ = os.Remove(c.object(it.model))
	delete(c.items, name)
	c.used -= it.model.Size
	c.stats.Evictions++
	c.p.Log.Info("model cache: evicted", "model", name, "size", gb(it.model.Size))
}

func gb(n int64) string { return fmt.Sprintf("%.2f GB", float64(n)/(1<<30)) }
