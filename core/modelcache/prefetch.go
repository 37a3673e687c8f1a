package modelcache

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
)

// Prefetch downloads the given models (most wanted first, e.g. demand.Tracker.Wanted), at most
// MaxDownloads at a time, and returns when they are all done. It never evicts a pinned model,
// one in use, or one worth more than the model it makes room for, so prefetching cannot push
// out what jobs need more. Models that do not fit are skipped. It returns the names fetched and
// the download errors (unknown names are skipped silently: jobs referencing them fail clearly
// in Ensure).
func (c *Cache) Prefetch(ctx context.Context, names []string) ([]string, error) {
	sem := make(chan struct{}, c.p.MaxDownloads)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		fetched []string
		errs    []error
	)
	for _, name := range names {
		c.mu.Lock()
		m, known := c.p.Catalog[name]
		_, have := c.items[name]
		var worth float64
		if known && !have {
			worth = c.keep(name, &item{model: m, last: c.p.Now()}, c.p.Now())
			if c.p.Policy == LRU {
				worth = math.Inf(1) // LRU has no notion of worth: evict the least recently used
			}
		}
		c.mu.Unlock()
		if !known || have {
			continue
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			return fetched, ctx.Err()
		case sem <- struct{}{}:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := c.load(ctx, m, worth, nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				fetched = append(fetched, name)
			case !errors.Is(err, ErrNoRoom):
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	slices.Sort(fetched)
	return fetched, errors.Join(errs...)
}

// OnDisk lists the models on disk, sorted: what the machine advertises in its worker
// capabilities (models) and machine:status, so claims can prefer machines that have them.
func (c *Cache) OnDisk() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for name, it := range c.items {
		if it.present {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Downloading lists the models being downloaded now (for a job or a prefetch), sorted.
func (c *Cache) Downloading() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for name, it := range c.items {
		if it.loading != nil {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Has reports whether the model is on disk now (a download under way does not count).
func (c *Cache) Has(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	it := c.items[name]
	return it != nil && it.present
}

// Known reports whether the catalogue has the model: the names a job may make the cache
// download. Other names are left to the service (ComfyUI may have them installed).
func (c *Cache) Known(name string) bool {
	_, ok := c.p.Catalog[name]
	return ok
}

// Names lists the catalogue's models, sorted: what the machine can serve, downloading first
// when needed.
func (c *Cache) Names() []string {
	out := make([]string, 0, len(c.p.Catalog))
	for name := range c.p.Catalog {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Stats returns the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Used, s.Budget = c.used, c.p.Budget
	return s
}

// InUse reports whether a running job holds the model.
func (c *Cache) InUse(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refs[name] > 0
}
