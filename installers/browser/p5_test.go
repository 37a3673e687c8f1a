package browser_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/installers"
	"github.com/emp-job-queue/machine/installers/browser"
)

const fakeP5 = "/*! p5.js v9.9.9 (test) */ window.p5 = function () {};\n"

// npmPackage packs a local p5 package with the real npm (offline: the source is a directory),
// so the tarball has exactly the layout the registry serves.
func npmPackage(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("npm"); err != nil {
		t.Fatal("npm is required (make test fetches p5.js with it)")
	}
	src, out := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(src, "package.json"), []byte(`{"name":"p5","version":"9.9.9","files":["lib"]}`), 0o644)
	_ = os.WriteFile(filepath.Join(src, "lib", "p5.min.js"), []byte(fakeP5), 0o644)
	cmd := exec.Command("npm", "pack", src, "--pack-destination", out, "--silent", "--offline")
	cmd.Env = append(os.Environ(), "npm_config_cache="+t.TempDir(), "npm_config_update_notifier=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm pack: %v\n%s", err, b)
	}
	return filepath.Join(out, "p5-9.9.9.tgz")
}

func TestInstallP5FromItsNpmPackage(t *testing.T) {
	tgz := npmPackage(t)
	data, _ := os.ReadFile(tgz)
	sum := sha256.Sum256(data)
	var hits int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		_, _ = w.Write(data)
	}))
	defer srv.Close()
	work := t.TempDir()
	d := &installers.Downloader{Cache: filepath.Join(work, "cache")}
	dest := filepath.Join(work, "opt", "p5", "p5.min.js")
	ctx := context.Background()

	if err := browser.InstallP5(ctx, d, srv.URL+"/p5/-/p5-9.9.9.tgz", hex.EncodeToString(sum[:]), dest); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dest); string(got) != fakeP5 {
		t.Fatalf("installed %q, want the package's lib/p5.min.js", got)
	}
	// Again: the download cache answers, and the file is rewritten whole.
	if err := browser.InstallP5(ctx, d, srv.URL+"/p5/-/p5-9.9.9.tgz", hex.EncodeToString(sum[:]), dest); err != nil || hits != 1 {
		t.Fatalf("second install: %v after %d downloads, want the cached package", err, hits)
	}
	if left, _ := filepath.Glob(filepath.Join(work, "opt", "p5", "*")); len(left) != 1 {
		t.Errorf("files left next to p5.min.js: %v", left)
	}

	// The same package from a local path; a wrong checksum is refused and leaves dest alone.
	dest2 := filepath.Join(work, "local", "p5.min.js")
	if err := browser.InstallP5(ctx, d, tgz, "", dest2); err != nil {
		t.Fatal(err)
	}
	err := browser.InstallP5(ctx, d, tgz, strings.Repeat("0", 64), filepath.Join(work, "bad", "p5.min.js"))
	if err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("wrong checksum: %v", err)
	}
	if _, err := os.Stat(filepath.Join(work, "bad", "p5.min.js")); !os.IsNotExist(err) {
		t.Error("a refused source left a file behind")
	}
}

func TestInstallP5FromTheScriptAndBadSources(t *testing.T) {
	work := t.TempDir()
	d := &installers.Downloader{Cache: filepath.Join(work, "cache")}
	js := filepath.Join(work, "p5.min.js")
	_ = os.WriteFile(js, []byte(fakeP5), 0o644)
	if err := browser.InstallP5(context.Background(), d, js, "", filepath.Join(work, "out", "p5.min.js")); err != nil {
		t.Fatal(err)
	}
	html := filepath.Join(work, "index.html")
	_ = os.WriteFile(html, []byte("<html>not found</html>"), 0o644)
	for _, src := range []string{html, "", filepath.Join(work, "missing.tgz")} {
		if err := browser.InstallP5(context.Background(), d, src, "", filepath.Join(work, "x", "p5.min.js")); err == nil {
			t.Errorf("source %q accepted", src)
		}
	}
}
