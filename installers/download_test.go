package installers_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/installers"
)

// modelServer serves one file with range support, and can drop the connection halfway through
// the first request.
type modelServer struct {
	data     []byte
	drop     atomic.Bool
	requests atomic.Int32
	ranges   atomic.Int32
}

func (m *modelServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.requests.Add(1)
	if r.URL.Path == "/missing.safetensors" {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Range") != "" {
		m.ranges.Add(1)
	}
	if m.drop.CompareAndSwap(true, false) {
		w.Header().Set("Content-Length", strconv.Itoa(len(m.data)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(m.data[:len(m.data)/2])
		w.(http.Flusher).Flush()
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
		return
	}
	http.ServeContent(w, r, "model.safetensors", time.Time{}, bytes.NewReader(m.data))
}

func payload() ([]byte, string) {
	data := bytes.Repeat([]byte("weights!"), 1<<16) // 512 KiB
	sum := sha256.Sum256(data)
	return data, hex.EncodeToString(sum[:])
}

func TestResumeAfterADroppedConnection(t *testing.T) {
	data, sum := payload()
	ms := &modelServer{data: data}
	ms.drop.Store(true)
	srv := httptest.NewServer(ms)
	defer srv.Close()
	dir := t.TempDir()
	d := &installers.Downloader{Cache: filepath.Join(dir, "cache")}
	dest := filepath.Join(dir, "ComfyUI", "models", "checkpoints", "model.safetensors")
	if err := d.Fetch(context.Background(), srv.URL+"/model.safetensors", sum, dest, nil); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dest)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("dest holds %d bytes (err %v), want the %d-byte file", len(got), err, len(data))
	}
	if ms.ranges.Load() != 1 || ms.requests.Load() != 2 {
		t.Errorf("requests %d, ranged %d: want one resumed request after the drop", ms.requests.Load(), ms.ranges.Load())
	}
	// A second destination comes from the cache, with no request.
	other := filepath.Join(dir, "other", "model.safetensors")
	if err := d.Fetch(context.Background(), srv.URL+"/model.safetensors", sum, other, nil); err != nil {
		t.Fatal(err)
	}
	if ms.requests.Load() != 2 {
		t.Error("a cached file was downloaded again")
	}
	a, _ := os.Stat(dest)
	b, _ := os.Stat(other)
	if !os.SameFile(a, b) {
		t.Error("the two destinations are not links to one cached file")
	}
}

func TestWrongChecksumIsDiscarded(t *testing.T) {
	data, _ := payload()
	srv := httptest.NewServer(&modelServer{data: data})
	defer srv.Close()
	dir := t.TempDir()
	d := &installers.Downloader{Cache: filepath.Join(dir, "cache")}
	dest := filepath.Join(dir, "model.safetensors")
	err := d.Fetch(context.Background(), srv.URL+"/model.safetensors", strings.Repeat("ab", 32), dest, nil)
	if err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("err = %v, want a checksum mismatch", err)
	}
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Error("a file that failed its checksum was put in place")
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "cache"))
	if len(entries) != 0 {
		t.Errorf("cache kept %d entries of a corrupt download", len(entries))
	}
}

func TestMissingFileIsAClearError(t *testing.T) {
	srv := httptest.NewServer(&modelServer{})
	defer srv.Close()
	d := &installers.Downloader{Cache: t.TempDir()}
	err := d.Fetch(context.Background(), srv.URL+"/missing.safetensors", strings.Repeat("ab", 32), filepath.Join(t.TempDir(), "x"), nil)
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "manifest") {
		t.Fatalf("err = %v", err)
	}
}
