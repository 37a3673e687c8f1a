// Package safefs guards the files the machine writes where another local user might reach:
// its run and log directories must be its own and closed to others, files there are opened
// without following symbolic links, and paths built from job input must stay inside their root.
package safefs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Dir creates dir (with perm) where it is missing and checks that only the machine's user can
// change what is in it: owned by the effective user, not writable by group or others.
// setting names the variable that chose it (MACHINE_RUN_DIR), for the error.
func Dir(dir, setting string, perm os.FileMode) error {
	if err := os.MkdirAll(dir, perm); err != nil {
		return fmt.Errorf("%s %s cannot be created (%w); point %s at a directory the machine's user can create", setting, dir, err, setting)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s %s: %w", setting, dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%s %s is not a directory; point %s at a directory", setting, dir, setting)
	}
	uid := os.Geteuid()
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != uid {
		return fmt.Errorf("%s %s belongs to user %d, not to the machine's user %d, so its pid files and logs cannot be trusted; chown it to user %d or point %s at a directory of that user",
			setting, dir, sys.Uid, uid, uid, setting)
	}
	if mode := st.Mode().Perm(); mode&0o022 != 0 {
		return fmt.Errorf("%s %s can be written by other users (mode %04o), who could plant pid files and links there; run chmod go-w %s or point %s elsewhere",
			setting, dir, mode, dir, setting)
	}
	return nil
}

// OpenFile opens path like os.OpenFile but never through a symbolic link, and only if it is a
// regular file: a link planted where a log goes could make the machine write over, or show,
// any file it can reach.
func OpenFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, perm)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%s is a symbolic link, which the machine does not follow (it could point at any file); remove it", path)
	}
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file; remove it", path)
	}
	return f, nil
}

// Append opens path for appending, creating it with mode 0644.
func Append(path string) (*os.File, error) {
	return OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
}

// Open opens path for reading.
func Open(path string) (*os.File, error) { return OpenFile(path, os.O_RDONLY, 0) }

// CreateNew replaces whatever is at path (a link is removed, not followed) with a new, empty
// file of mode perm.
func CreateNew(path string, perm os.FileMode) (*os.File, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
}

// Within reports an error unless path lies strictly inside root (both are cleaned first; no
// symbolic links are resolved).
func Within(root, path string) error {
	rel, err := filepath.Rel(filepath.Clean(root), filepath.Clean(path))
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return fmt.Errorf("%s is not inside %s", path, root)
	}
	return nil
}
