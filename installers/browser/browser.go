// Package browser finds the Chromium the browser service runs (Debian's package: Playwright's
// own browser download cannot work offline), installs it through apt where that is allowed,
// and checks its version.
package browser

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"

	"github.com/emp-job-queue/machine/installers"
)

// Candidates are the names Chromium goes by, in order of preference.
var Candidates = []string{"chromium", "chromium-browser", "google-chrome-stable", "google-chrome"}

// MinMajor is the oldest Chromium major version the browser connector supports.
const MinMajor = 120

// Browser is a found browser.
type Browser struct {
	Path    string
	Version string
	Major   int
}

var versionRe = regexp.MustCompile(`(\d+)\.(\d+)\.(\d+)(?:\.(\d+))?`)

// Find looks for Chromium on PATH; with allowApt it installs Debian's package when none is
// found. It fails with one sentence that says what to do.
func Find(ctx context.Context, allowApt bool) (Browser, error) {
	b, err := find(ctx)
	if err == nil || !allowApt {
		return b, err
	}
	if err := installers.Command(ctx, "", nil, "apt-get", "update", "-qq"); err != nil {
		return Browser{}, fmt.Errorf("no Chromium found, and apt-get update failed: %w", err)
	}
	if err := installers.Command(ctx, "", nil, "apt-get", "install", "-y", "-qq", "chromium"); err != nil {
		return Browser{}, fmt.Errorf("no Chromium found, and apt-get install chromium failed: %w", err)
	}
	return find(ctx)
}

func find(ctx context.Context) (Browser, error) {
	for _, name := range Candidates {
		path, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		out, err := exec.CommandContext(ctx, path, "--version").Output()
		if err != nil {
			return Browser{}, fmt.Errorf("%s --version failed (%v); reinstall Chromium", path, err)
		}
		m := versionRe.FindStringSubmatch(string(out))
		if m == nil {
			return Browser{}, fmt.Errorf("%s --version printed %q, not a version; reinstall Chromium", path, strings.TrimSpace(string(out)))
		}
		major, _ := strconv.Atoi(m[1])
		b := Browser{Path: path, Version: m[0], Major: major}
		if major < MinMajor {
			return b, fmt.Errorf("%s is Chromium %s, older than %d; upgrade it (apt-get install chromium)", path, m[0], MinMajor)
		}
		return b, nil
	}
	return Browser{}, fmt.Errorf("no Chromium on PATH (looked for %s); install Debian's package: apt-get install -y chromium, or allow the machine to (BROWSER_INSTALL=apt)", strings.Join(Candidates, ", "))
}
