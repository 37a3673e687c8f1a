package connectors

import (
	"path/filepath"
	"sync"

	"github.com/emp-job-queue/machine/installers"
)

// Runner runs install stages with the configuration's markers, limits and logging
// (MACHINE_CACHE_DIR/markers, SERVICE_INSTALL_TIMEOUT, MACHINE_INSTALL_STRICT); a long step's
// progress is logged every 10 %.
func (env InstallEnv) Runner() *installers.Runner {
	cfg, log := env.Config, env.Log
	var mu sync.Mutex
	logged := map[string]int64{}
	return &installers.Runner{MarkerDir: filepath.Join(cfg.CacheDir, "markers"), Parallel: 4,
		Timeout: cfg.InstallTimeout, Strict: cfg.InstallStrict, Log: log,
		OnEvent: func(ev installers.Event) {
			if ev.Phase != installers.Progress || ev.Total <= 0 || log == nil {
				return
			}
			tenth := ev.Done * 10 / ev.Total
			mu.Lock()
			defer mu.Unlock()
			if last, seen := logged[ev.Step]; seen && tenth <= last {
				return
			}
			logged[ev.Step] = tenth
			log.Info("install step progress", "step", ev.Step, "done", ev.Done, "total", ev.Total, "percent", tenth*10)
		}}
}
