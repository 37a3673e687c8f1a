package installers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// GitCheckout puts url at branch/commit in dir: a fresh clone lands in a temporary directory
// and is renamed into place, so a failed clone never leaves a half checkout behind; an
// existing checkout is fetched and moved to the commit (or the branch's head).
func GitCheckout(ctx context.Context, url, branch, commit, dir string, recursive bool) error {
	if _, err := os.Stat(filepath.Join(dir, ".git")); err == nil {
		if err := Command(ctx, dir, nil, "git", "fetch", "--quiet", "origin"); err != nil {
			return err
		}
		ref := commit
		if ref == "" && branch != "" {
			ref = "origin/" + branch
		}
		if ref == "" {
			return nil
		}
		return Command(ctx, dir, nil, "git", "checkout", "--quiet", "--force", ref)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	tmp := dir + ".cloning"
	_ = os.RemoveAll(tmp)
	args := []string{"clone", "--quiet"}
	if recursive {
		args = append(args, "--recursive")
	}
	if branch != "" {
		args = append(args, "--branch", branch)
	}
	if err := Command(ctx, "", nil, "git", append(args, url, tmp)...); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	if commit != "" {
		if err := Command(ctx, tmp, nil, "git", "checkout", "--quiet", commit); err != nil {
			_ = os.RemoveAll(tmp)
			return fmt.Errorf("commit %s of %s: %w", commit, url, err)
		}
	}
	_ = os.RemoveAll(dir)
	return os.Rename(tmp, dir)
}
