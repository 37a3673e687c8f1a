package config

import (
	"os"
	"os/user"
	"strconv"

	"github.com/emp-job-queue/machine/core/netguard"
)

// DefaultBrowserUser is who the browser runs as when the machine runs as root: Chromium's
// sandbox cannot work for root.
const DefaultBrowserUser = "nobody"

// jobNetwork reads what bounds the network traffic jobs cause and how the browser that runs
// their pages is isolated.
func (r *reader) jobNetwork(c *Config) {
	allow, err := netguard.ParseAllowList(r.str(netguard.Setting, ""))
	if err != nil {
		r.problem("%s: %v; list networks jobs may reach, e.g. 10.20.0.0/16,127.0.0.1", netguard.Setting, err)
	}
	c.AllowPrivateNetworks = allow
	c.BrowserSandbox = r.boolean("BROWSER_SANDBOX", true)
	c.BrowserUser = r.str("BROWSER_USER", DefaultBrowserUser)
	if os.Geteuid() != 0 {
		return // the browser runs as the machine's own user; BROWSER_USER is not used
	}
	u, err := lookupUser(c.BrowserUser)
	switch {
	case err != nil:
		r.problem("BROWSER_USER %q is not a user of this system (%v); create one (useradd --system browser) or use nobody", c.BrowserUser, err)
	case u.Uid == "0" && c.BrowserSandbox:
		r.problem("BROWSER_USER %q is root, for whom Chromium has no sandbox; name an unprivileged user (default %s), or set BROWSER_SANDBOX=false to run it unsandboxed", c.BrowserUser, DefaultBrowserUser)
	}
}

// lookupUser finds a user by name or numeric id.
func lookupUser(name string) (*user.User, error) {
	if _, err := strconv.Atoi(name); err == nil {
		return user.LookupId(name)
	}
	return user.Lookup(name)
}
