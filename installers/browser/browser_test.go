package browser_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/installers/browser"
)

// The real Chromium, where the machine has it (make test installs it for the browser
// connector): found, and its version read.
func TestFindsTheRealChromium(t *testing.T) {
	path := ""
	for _, n := range browser.Candidates {
		if p, err := exec.LookPath(n); err == nil {
			path = p
			break
		}
	}
	b, err := browser.Find(context.Background(), false)
	if path == "" {
		if err == nil || !strings.Contains(err.Error(), "apt-get install -y chromium") {
			t.Fatalf("without Chromium: %v, want a sentence saying how to install it", err)
		}
		return
	}
	if err != nil || b.Path != path || b.Major < browser.MinMajor {
		t.Fatalf("Find = %+v, %v", b, err)
	}
}

// A Chromium too old to drive is refused with the version in the sentence. The "browser" here
// is a two-line script on a PATH of its own, standing in for an old package.
func TestRefusesAnOldChromium(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\necho 'Chromium 99.0.4844.84 built on Debian'\n"
	if err := os.WriteFile(filepath.Join(dir, "chromium"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	_, err := browser.Find(context.Background(), false)
	if err == nil || !strings.Contains(err.Error(), "99.0.4844") || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("err = %v", err)
	}
}

// The real Chromium builds its sandbox here (as nobody when the test runs as root); a host
// that refuses it gets a sentence saying what to allow, or how to opt out. The refusing
// "browser" is a script printing Chromium's own message.
func TestCheckSandbox(t *testing.T) {
	if b, err := browser.Find(context.Background(), false); err == nil {
		cred, err := browser.Credential("nobody")
		if err != nil {
			t.Fatal(err)
		}
		if err := browser.CheckSandbox(context.Background(), b.Path, cred); err != nil {
			t.Errorf("the real Chromium: %v", err)
		}
	}
	dir := t.TempDir()
	script := "#!/bin/sh\necho '[1:1:FATAL:zygote_host_impl_linux.cc(128)] No usable sandbox! If you are running on Ubuntu 23.10+ ...' >&2\nexit 1\n"
	fake := filepath.Join(dir, "chromium")
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	err := browser.CheckSandbox(context.Background(), fake, nil)
	if err == nil || !strings.Contains(err.Error(), "BROWSER_SANDBOX=false") || !strings.Contains(err.Error(), "user namespaces") {
		t.Fatalf("err = %v", err)
	}
}
