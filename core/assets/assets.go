// Package assets stores what jobs produce (images, files) and says where the result points to.
// This version stores into a local directory, optionally served under a public base URL; the
// job's ctx.prefix and ctx.filename shape the name, as the old asset saver did.
package assets

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/internal/safefs"
)

// Store is a local asset directory.
type Store struct {
	Dir     string // where files go
	BaseURL string // public URL of Dir; empty: file:// URLs
}

// Saved is a stored asset.
type Saved struct {
	Path     string
	URL      string
	MimeType string
	Size     int64
}

var unsafe = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// Save writes data for a job under ctx.prefix/ctx.filename (or <job id>.<ext>), atomically.
// The name comes from the job, so the final path is checked to lie inside Dir, through any
// symbolic link on the way.
func (s Store) Save(ctx context.Context, jobID string, jobCtx json.RawMessage, ext string, data []byte) (Saved, error) {
	if err := ctx.Err(); err != nil {
		return Saved{}, err
	}
	var c struct {
		Prefix   string `json:"prefix"`
		Filename string `json:"filename"`
	}
	_ = json.Unmarshal(jobCtx, &c)
	rel, err := objectKey(jobID, c.Prefix, c.Filename, ext)
	if err != nil {
		return Saved{}, err
	}
	full := filepath.Join(s.Dir, filepath.FromSlash(rel))
	if err := safefs.Within(s.Dir, full); err != nil {
		return Saved{}, job.Permanent(fmt.Errorf("the job's output name %q leads outside the asset directory; give ctx.filename a plain name such as out.png", rel))
	}
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return Saved{}, fmt.Errorf("store asset: %w", err)
	}
	if err := insideResolved(s.Dir, filepath.Dir(full)); err != nil {
		return Saved{}, job.Permanent(fmt.Errorf("the job's output %q would be stored outside the asset directory (%v); give ctx.prefix a plain path", rel, err))
	}
	tmp := full + ".part"
	f, err := safefs.CreateNew(tmp, 0o644)
	if err != nil {
		return Saved{}, fmt.Errorf("store asset: %w", err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, full)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return Saved{}, fmt.Errorf("store asset: %w", err)
	}
	u := (&url.URL{Scheme: "file", Path: full}).String()
	if s.BaseURL != "" {
		u = strings.TrimRight(s.BaseURL, "/") + "/" + rel
	}
	return Saved{Path: full, URL: u, MimeType: mime.TypeByExtension(ext), Size: int64(len(data))}, nil
}

// insideResolved checks that dir, with its symbolic links resolved, is root or inside it.
func insideResolved(root, dir string) error {
	r, err := filepath.EvalSymlinks(root)
	if err != nil {
		return err
	}
	d, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	if d == r {
		return nil
	}
	return safefs.Within(r, d)
}
