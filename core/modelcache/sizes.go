package modelcache

// SizesOnDisk is the size in bytes (the catalogue's) of each model on disk.
func (c *Cache) SizesOnDisk() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.items))
	for name, it := range c.items {
		if it.present {
			out[name] = it.model.Size
		}
	}
	return out
}
