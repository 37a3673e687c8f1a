package installers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Downloader fetches files into a shared cache and links them into place. Downloads resume
// with HTTP range requests after a dropped connection, land in a temporary file, are checked
// against their sha256, and are renamed into the cache atomically: a half-written or corrupt
// file is never where a service looks for it.
type Downloader struct {
	Cache    string // shared across services and boots
	Client   *http.Client
	Attempts int // per file, resuming each time; default 4
	// AllowUnverified lets a file without a sha256 download, over https only
	// (MACHINE_ALLOW_UNVERIFIED_DOWNLOADS). Without it such a file is refused: nothing would
	// tell a swapped or truncated model from the real one.
	AllowUnverified bool
}

// Fetch makes dest hold the file at url, checked against its sha256.
func (d *Downloader) Fetch(ctx context.Context, url, sum, dest string, progress func(done, total int64)) error {
	sum = strings.ToLower(strings.TrimSpace(sum))
	if err := d.allowed(url, sum); err != nil {
		return err
	}
	if err := os.MkdirAll(d.Cache, 0o755); err != nil {
		return fmt.Errorf("create download cache %s: %w", d.Cache, err)
	}
	key := sum
	if key == "" {
		h := sha256.Sum256([]byte(url))
		key = "url-" + hex.EncodeToString(h[:16])
	}
	cached := filepath.Join(d.Cache, key)
	if _, err := os.Stat(cached); err != nil {
		if err := d.download(ctx, url, sum, cached, progress); err != nil {
			return err
		}
	}
	return linkInto(cached, dest)
}

// allowed refuses what may not be downloaded: other schemes than http(s), and a file without
// a sha256 unless AllowUnverified, and then only over https.
func (d *Downloader) allowed(raw, sum string) error {
	u, err := neturl.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return permanentErr{fmt.Errorf("download %s: not an http(s) URL; fix the manifest's url", Redact(raw))}
	}
	switch {
	case sum != "":
		return nil
	case !d.AllowUnverified:
		return permanentErr{fmt.Errorf("download %s: the manifest gives no sha256, so a swapped or damaged file could not be told apart; add its sha256 (sha256sum <file>), or set MACHINE_ALLOW_UNVERIFIED_DOWNLOADS=true to fetch files without one over https", Redact(raw))}
	case u.Scheme != "https":
		return permanentErr{fmt.Errorf("download %s: a file without a sha256 is fetched over https only; use an https URL or add its sha256", Redact(raw))}
	}
	return nil
}

// errInsecureRedirect stops an unverified download that an https server sends elsewhere.
var errInsecureRedirect = errors.New("a file without a sha256 is fetched over https only, and the server redirected away from https")

func (d *Downloader) client(verified bool) *http.Client {
	c := d.Client
	if c == nil {
		c = &http.Client{Timeout: 0} // large files: the context bounds the time
	}
	if verified {
		return c
	}
	// Unverified: https all the way, redirects included.
	cc := *c
	cc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != "https" {
			return fmt.Errorf("%w: redirected to %s", errInsecureRedirect, Redact(req.URL.String()))
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &cc
}

// download fetches url into path via path.part, resuming across attempts.
func (d *Downloader) download(ctx context.Context, url, sum, path string, progress func(done, total int64)) error {
	part := path + ".part"
	attempts := d.Attempts
	if attempts <= 0 {
		attempts = 4
	}
	var last error
	for attempt := 1; attempt <= attempts; attempt++ {
		err := d.attempt(ctx, url, sum != "", part, progress)
		if err == nil {
			return finish(part, path, sum, url)
		}
		var perm permanentErr
		if errors.As(err, &perm) || ctx.Err() != nil {
			return err
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		}
	}
	return fmt.Errorf("download %s: gave up after %d attempts: %w", Redact(url), attempts, last)
}

type permanentErr struct{ error }

// ErrChecksumMismatch is what a download whose file does not match its sha256 fails with
// (errors.Is): the file was discarded, and fetching the same source again gives the same file.
var ErrChecksumMismatch = errors.New("checksum mismatch")

type checksumErr struct{ error }

func (checksumErr) Is(target error) bool { return target == ErrChecksumMismatch }

// attempt appends the rest of the file to part, asking for a range when part has bytes.
func (d *Downloader) attempt(ctx context.Context, url string, verified bool, part string, progress func(done, total int64)) error {
	shown := Redact(url)
	f, err := os.OpenFile(part, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return permanentErr{fmt.Errorf("open %s: %w", part, err)}
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return permanentErr{fmt.Errorf("download %s: %s", shown, Redact(err.Error()))}
	}
	if have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
	}
	resp, err := d.client(verified).Do(req)
	if errors.Is(err, errInsecureRedirect) {
		return permanentErr{fmt.Errorf("download %s: %s", shown, Redact(err.Error()))}
	}
	if err != nil {
		return fmt.Errorf("download %s: %s", shown, Redact(err.Error()))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent:
	case resp.StatusCode == http.StatusOK:
		if have > 0 { // the server ignored the range: start over
			if err := f.Truncate(0); err != nil {
				return err
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return err
			}
			have = 0
		}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return nil // we already have every byte
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized:
		return permanentErr{fmt.Errorf("download %s: the server answered %s; check the manifest's url (and any token it needs)", shown, resp.Status)}
	default:
		return fmt.Errorf("download %s: the server answered %s", shown, resp.Status)
	}
	total := int64(-1)
	if resp.ContentLength >= 0 {
		total = have + resp.ContentLength
	}
	w := &countingWriter{w: f, done: have, total: total, progress: progress}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("download %s: connection dropped after %d bytes (will resume): %s", shown, w.done, Redact(err.Error()))
	}
	if total >= 0 && w.done < total {
		return fmt.Errorf("download %s: got %d of %d bytes (will resume)", shown, w.done, total)
	}
	return f.Sync()
}

type countingWriter struct {
	w           io.Writer
	done, total int64
	progress    func(done, total int64)
	last        time.Time
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.done += int64(n)
	if c.progress != nil && time.Since(c.last) > 250*time.Millisecond {
		c.last = time.Now()
		c.progress(c.done, c.total)
	}
	return n, err
}

// finish checks the downloaded file and renames it into the cache.
func finish(part, path, sum, url string) error {
	if sum != "" {
		f, err := os.Open(part)
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return err
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != sum {
			_ = os.Remove(part)
			return checksumErr{fmt.Errorf("download %s: checksum mismatch (sha256 %s, the manifest says %s); the file was discarded: fix the manifest or the source", Redact(url), got, sum)}
		}
	}
	if err := os.Rename(part, path); err != nil {
		return fmt.Errorf("move %s into the cache: %w", part, err)
	}
	return nil
}

// linkInto makes dest the cached file: a hard link where the filesystem allows it, else a
// symbolic link, placed atomically.
func linkInto(cached, dest string) error {
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(dest), err)
	}
	tmp := dest + ".linking"
	_ = os.Remove(tmp)
	if err := os.Link(cached, tmp); err != nil {
		abs, _ := filepath.Abs(cached)
		if err := os.Symlink(abs, tmp); err != nil {
			return fmt.Errorf("link %s to %s: %w", cached, dest, err)
		}
	}
	if err := os.Rename(tmp, dest); err != nil {
		return fmt.Errorf("place %s: %w", dest, err)
	}
	return nil
}
