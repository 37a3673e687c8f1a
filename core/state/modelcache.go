package state

// ModelCache is the model cache's figures (core/machine's models, MACHINE_MODEL_CACHE_GB).
// Its slices and map are replaced, never changed, once stored.
type ModelCache struct {
	On              bool // MACHINE_MODEL_CACHE_GB > 0
	UsedBytes       int64
	BudgetBytes     int64
	Hits            int64 // jobs whose model was on disk
	Misses          int64 // jobs that waited for a download
	Downloads       int64
	BytesDownloaded int64
	Evictions       int64
	OnDisk          []string
	Sizes           map[string]int64 // bytes of each model on disk, from the catalogue
	Downloading     []string
	// InVRAM is, per GPU, the models of the last job completed on it: an inference (ComfyUI
	// keeps its last prompt's models loaded), not a reading.
	InVRAM map[int][]string
}

// SetModelCache records the model cache's figures.
func (s *Store) SetModelCache(c ModelCache) {
	s.update(reading, func(snap *Snapshot) { snap.ModelCache = c })
}
