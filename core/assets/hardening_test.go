package assets_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/job"
)

// Names come from the job (its id, ctx.filename, ctx.prefix). None may make the machine write
// outside the asset directory: names that clean to ".", ".." or nothing are refused for good,
// and a link inside the directory that leads out is not followed.
func TestJobNamesCannotLeaveTheAssetDirectory(t *testing.T) {
	cases := []struct {
		name, id, ctx, ext string
	}{
		{"job id ..", "..", `{}`, ""},
		{"job id .", ".", `{}`, ""},
		{"empty job id", "", `{}`, ""},
		{"filename ..", "job-1", `{"filename":".."}`, ""},
		{"filename . with prefix ..", "job-1", `{"prefix":"../..","filename":"."}`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "inner", "assets")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			s := assets.Store{Dir: dir}
			_, err := s.Save(context.Background(), c.id, json.RawMessage(c.ctx), c.ext, []byte("payload"))
			if err == nil || !job.IsPermanent(err) || !strings.Contains(err.Error(), "name") {
				t.Errorf("Save(%q, %s) = %v; want a permanent error about the name", c.id, c.ctx, err)
			}
			_ = filepath.Walk(root, func(p string, info os.FileInfo, _ error) error {
				if info != nil && !info.IsDir() {
					t.Errorf("a file was written: %s", p)
				}
				return nil
			})
		})
	}
}

func TestALinkInsideTheAssetDirectoryIsNotFollowed(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "u")); err != nil {
		t.Fatal(err)
	}
	_, err := assets.Store{Dir: dir}.Save(context.Background(), "job-1", json.RawMessage(`{"prefix":"u"}`), ".png", []byte("png"))
	if err == nil || !job.IsPermanent(err) {
		t.Errorf("Save through a link out of the directory = %v; want a permanent error", err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("written outside through the link: %v", entries)
	}
}
