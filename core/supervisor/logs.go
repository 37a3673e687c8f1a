package supervisor

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/emp-job-queue/machine/internal/safefs"
)

// ring keeps the last lines of a service's output in memory.
type ring struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
}

func newRing(n int) *ring { return &ring{lines: make([]string, n)} }

func (r *ring) add(line string) {
	r.mu.Lock()
	r.lines[r.next] = line
	r.next = (r.next + 1) % len(r.lines)
	if r.next == 0 {
		r.full = true
	}
	r.mu.Unlock()
}

// last returns up to n lines, oldest first.
func (r *ring) last(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []string
	if r.full {
		all = append(append(all, r.lines[r.next:]...), r.lines[:r.next]...)
	} else {
		all = append(all, r.lines[:r.next]...)
	}
	if n > 0 && n < len(all) {
		all = all[len(all)-n:]
	}
	return all
}

// logFile is a service's log on disk. The service writes it directly (opened O_APPEND), so
// its output survives a restart of the machine, which re-attaches to it. The supervisor tails
// it into the ring and rotates it by copy-and-truncate when it passes maxBytes, keeping keep
// old files (name.log.1 is the newest). Bytes a service writes in the instant between the copy
// and the truncation can be lost; everything else is kept.
type logFile struct {
	path     string
	maxBytes int64
	keep     int
	ring     *ring
	offset   int64
	partial  []byte
}

func openLog(path string, maxBytes int64, keep int, r *ring) (*logFile, *os.File, error) {
	f, err := safefs.Append(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open service log: %w", err)
	}
	st, _ := f.Stat()
	lf := &logFile{path: path, maxBytes: maxBytes, keep: keep, ring: r}
	if st != nil {
		lf.offset = st.Size() // older output is on disk; the ring shows what comes next
	}
	return lf, f, nil
}

// poll reads what the service wrote since the last poll into the ring, then rotates if the
// file is over its cap.
func (l *logFile) poll() error {
	f, err := safefs.Open(l.path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < l.offset { // truncated by someone else
		l.offset = 0
	}
	if st.Size() > l.offset {
		if _, err := f.Seek(l.offset, io.SeekStart); err != nil {
			return err
		}
		data, err := io.ReadAll(io.LimitReader(f, st.Size()-l.offset))
		if err != nil {
			return err
		}
		l.offset += int64(len(data))
		data = append(l.partial, data...)
		for {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				break
			}
			l.ring.add(strings.TrimRight(string(data[:i]), "\r"))
			data = data[i+1:]
		}
		l.partial = append([]byte(nil), data...)
	}
	if l.maxBytes > 0 && l.offset >= l.maxBytes {
		return l.rotate()
	}
	return nil
}

func (l *logFile) rotate() error {
	for i := l.keep - 1; i >= 1; i-- {
		_ = os.Rename(fmt.Sprintf("%s.%d", l.path, i), fmt.Sprintf("%s.%d", l.path, i+1))
	}
	src, err := safefs.Open(l.path)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := safefs.CreateNew(l.path+".1", 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	live, err := safefs.OpenFile(l.path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer live.Close()
	if err := live.Truncate(0); err != nil {
		return err
	}
	l.offset = 0
	return nil
}
