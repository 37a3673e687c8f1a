package safefs_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/internal/safefs"
)

func TestWithin(t *testing.T) {
	cases := []struct {
		path string
		ok   bool
	}{
		{"/a/assets/x.png", true}, {"/a/assets/u/x.png", true}, {"/a/assets/u/../x.png", true},
		{"/a/assets", false}, {"/a/assets/.", false}, {"/a/assets/..", false}, {"/a/assets/../b", false},
		{"/a/assets-other/x", false}, {"/a/assets/../../etc/passwd", false}, {"/a/assets/..x", true},
	}
	for _, c := range cases {
		if err := safefs.Within("/a/assets", c.path); (err == nil) != c.ok {
			t.Errorf("Within(/a/assets, %s) = %v, want inside %v", c.path, err, c.ok)
		}
	}
}

func TestOpenRefusesLinksAndOddFiles(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := safefs.Append(link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Append through a link: %v", err)
	}
	if _, err := safefs.Open(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Open of a directory: %v", err)
	}
	f, err := safefs.CreateNew(link, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if b, _ := os.ReadFile(target); string(b) != "x" {
		t.Errorf("CreateNew wrote through the link: %q", b)
	}
	if st, _ := os.Lstat(link); !st.Mode().IsRegular() {
		t.Error("CreateNew left the link in place")
	}
}

func TestDirCreatesAPrivateDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "machine")
	if err := safefs.Dir(dir, "MACHINE_RUN_DIR", 0o700); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("mode %v", st.Mode())
	}
	if err := os.Chmod(dir, 0o770); err != nil {
		t.Fatal(err)
	}
	if err := safefs.Dir(dir, "MACHINE_RUN_DIR", 0o700); err == nil || !strings.Contains(err.Error(), "mode 0770") {
		t.Errorf("group-writable directory: %v", err)
	}
}
