package playwright

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"syscall"
	"time"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/supervisor"
	"github.com/emp-job-queue/machine/installers/browser"
)

// Descriptor is the playwright connector: browser jobs in one supervised headless Chromium,
// shared by every slot, each job in a browser context of its own behind its own filtering proxy.
var Descriptor = connectors.Descriptor{
	Name: "playwright", JobServices: []string{"playwright"}, StatusServices: []string{"playwright"},
	Service: &connectors.ServiceKind{Kind: "browser", BasePort: connectors.Port(9222), Install: install},
	New: func(env connectors.Env) connectors.Connector {
		return New(Settings{DebugURL: env.ServiceURL, MaxTabs: env.Config.BrowserTabs, P5JS: env.Config.P5JS, Assets: env.Assets,
			Network: env.Network})
	},
}

// install finds Chromium (installing Debian's package when BROWSER_INSTALL=apt allows it) and,
// with BROWSER_SANDBOX on, checks that this host lets it build its sandbox as the user it runs as
// (BROWSER_USER when the machine runs as root).
func install(ctx context.Context, env connectors.InstallEnv) (connectors.SpecFunc, error) {
	c := env.Config
	b, err := browser.Find(ctx, c.BrowserInstall == "apt")
	if err != nil {
		return nil, err
	}
	cred, err := browser.Credential(c.BrowserUser)
	if err != nil {
		return nil, err
	}
	if c.BrowserSandbox {
		if err := browser.CheckSandbox(ctx, b.Path, cred); err != nil {
			return nil, err
		}
	}
	// The profile is also the browser's HOME. Run as BROWSER_USER, it lives under the temporary
	// directory, owned by that user (who cannot enter the machine's run directory).
	profile, err := browser.PrepareProfile(ProfileDir(c), cred)
	if err != nil {
		return nil, err
	}
	env.Log.Info("browser found", "path", b.Path, "version", b.Version, "profile", profile)
	logIsolation(env.Log, c, cred)
	return func(i connectors.Instance) supervisor.Spec {
		return supervisor.Spec{
			Name: i.Name, Command: append([]string{b.Path}, browser.Flags(browser.Options{Port: i.Port, ProfileDir: profile, Sandbox: c.BrowserSandbox})...),
			Env: []string{"HOME=" + profile}, Credential: cred,
			Port: i.Port, GPU: i.GPU, StopGrace: 5 * time.Second,
			Probe: supervisor.Probe{Kind: "http", Target: fmt.Sprintf("http://127.0.0.1:%d/json/version", i.Port)},
		}
	}, nil
}

// ProfileDir is where the browser's profile goes when it runs as the machine's own user.
func ProfileDir(c *config.Config) string { return filepath.Join(c.RunDir, "browser-profile") }

// logIsolation says who the browser runs as and whether its sandbox is on.
func logIsolation(log *slog.Logger, c *config.Config, cred *syscall.Credential) {
	who := "the machine's own user"
	if cred != nil {
		who = fmt.Sprintf("%s (uid %d)", c.BrowserUser, cred.Uid)
	}
	if !c.BrowserSandbox {
		log.Warn("the browser runs without Chromium's sandbox (BROWSER_SANDBOX=false): a page that exploits the renderer gets the browser user's rights", "user", who)
		return
	}
	log.Info("the browser runs sandboxed", "user", who)
}
