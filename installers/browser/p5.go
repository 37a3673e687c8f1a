package browser

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/emp-job-queue/machine/installers"
)

// P5Entry is where p5.min.js sits inside p5's npm package.
const P5Entry = "package/lib/p5.min.js"

// maxP5 bounds what is read from the package: p5.min.js is about 1 MB.
const maxP5 = 64 << 20

// InstallP5 puts p5.min.js at dest (PLAYWRIGHT_P5_JS). The source is an http(s) URL or a local
// path, of either p5's npm package (the registry's p5-X.tgz, or what `npm pack p5` writes) or
// the script itself. With sum, the source must have that sha256. The file appears at dest
// whole or not at all.
func InstallP5(ctx context.Context, d *installers.Downloader, source, sum, dest string) error {
	if source == "" || dest == "" {
		return errors.New("p5.js needs a source (--from URL or path of p5's npm package or p5.min.js) and a destination (PLAYWRIGHT_P5_JS)")
	}
	local := source
	if strings.HasPrefix(source, "http://") || strings.HasPrefix(source, "https://") {
		local = dest + ".download"
		defer os.Remove(local)
		if err := d.Fetch(ctx, source, sum, local, nil); err != nil {
			return fmt.Errorf("fetch p5.js: %w", err)
		}
		sum = "" // checked by the download
	}
	data, err := os.ReadFile(local)
	if err != nil {
		return fmt.Errorf("read p5.js source: %w", err)
	}
	if sum != "" {
		got := sha256.Sum256(data)
		if hex.EncodeToString(got[:]) != strings.ToLower(sum) {
			return fmt.Errorf("p5.js source %s has sha256 %x, not the expected %s; check the source or the checksum", source, got, sum)
		}
	}
	if bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
		if data, err = fromPackage(data); err != nil {
			return fmt.Errorf("p5.js package %s: %w", source, err)
		}
	}
	if !bytes.Contains(data[:min(len(data), 4096)], []byte("p5")) {
		return fmt.Errorf("%s is neither p5's npm package nor p5.min.js (no \"p5\" in its first 4 KB); give the right file", source)
	}
	return writeAtomic(dest, data)
}

// fromPackage reads p5.min.js out of p5's npm package (a gzipped tar).
func fromPackage(tgz []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(bufio.NewReader(zr))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("it has no %s; is it p5's npm package?", P5Entry)
		}
		if err != nil {
			return nil, err
		}
		if h.Name == P5Entry && h.Typeflag == tar.TypeReg {
			return io.ReadAll(io.LimitReader(tr, maxP5))
		}
	}
}

func writeAtomic(dest string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(dest), err)
	}
	tmp := dest + ".writing"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write p5.js: %w", err)
	}
	if err := os.Rename(tmp, dest); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("place p5.js at %s: %w", dest, err)
	}
	return nil
}
