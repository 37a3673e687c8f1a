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
func (s Store) Save(ctx context.Context, jobID string, jobCtx json.RawMessage, ext string, data []byte) (Saved, error) {
	if err := ctx.Err(); err != nil {
		return Saved{}, err
	}
	var c struct {
		Prefix   string `json:"prefix"`
		Filename string `json:"filename"`
	}
	_ = json.Unmarshal(jobCtx, &c)
	rel := objectKey(jobID, c.Prefix, c.Filename, ext)
	full := filepath.Join(s.Dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return Saved{}, fmt.Errorf("store asset: %w", err)
	}
	tmp := full + ".part"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return Saved{}, fmt.Errorf("store asset: %w", err)
	}
	if err := os.Rename(tmp, full); err != nil {
		return Saved{}, fmt.Errorf("store asset: %w", err)
	}
	u := (&url.URL{Scheme: "file", Path: full}).String()
	if s.BaseURL != "" {
		u = strings.TrimRight(s.BaseURL, "/") + "/" + rel
	}
	return Saved{Path: full, URL: u, MimeType: mime.TypeByExtension(ext), Size: int64(len(data))}, nil
}
