package playwright

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/supervisor"
	"github.com/emp-job-queue/machine/installers/browser"
)

// Descriptor is the playwright connector: browser jobs in one supervised headless Chromium,
// shared by every slot.
var Descriptor = connectors.Descriptor{
	Name: "playwright", JobServices: []string{"playwright"}, StatusServices: []string{"playwright"},
	Service: &connectors.ServiceKind{Kind: "browser", BasePort: connectors.Port(9222), Install: install},
	New: func(env connectors.Env) connectors.Connector {
		return New(Settings{DebugURL: env.ServiceURL, MaxTabs: env.Config.BrowserTabs, P5JS: env.Config.P5JS, Assets: env.Assets})
	},
}

// install finds Chromium (installing Debian's package when BROWSER_INSTALL=apt allows it).
func install(ctx context.Context, env connectors.InstallEnv) (connectors.SpecFunc, error) {
	b, err := browser.Find(ctx, env.Config.BrowserInstall == "apt")
	if err != nil {
		return nil, err
	}
	env.Log.Info("browser found", "path", b.Path, "version", b.Version)
	profile := filepath.Join(env.Config.RunDir, "browser-profile")
	return func(i connectors.Instance) supervisor.Spec {
		return supervisor.Spec{
			Name: i.Name, Command: append([]string{b.Path}, browser.Flags(i.Port, profile)...),
			Port: i.Port, GPU: i.GPU, StopGrace: 5 * time.Second,
			Probe: supervisor.Probe{Kind: "http", Target: fmt.Sprintf("http://127.0.0.1:%d/json/version", i.Port)},
		}
	}, nil
}
