package installers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// gitEnv is what git runs with on top of the stripped environment: it never waits for a
// password on a terminal, and speaks only the usual transports (not ext::, which runs commands).
var gitEnv = []string{"GIT_TERMINAL_PROMPT=0", "GIT_ALLOW_PROTOCOL=https:http:ssh:git:file"}

// CheckGitArgs refuses a URL, branch or commit that git would read as an option.
func CheckGitArgs(url, branch, commit string) error {
	for _, a := range []struct{ what, v string }{{"url", url}, {"branch", branch}, {"commit", commit}} {
		if strings.HasPrefix(strings.TrimSpace(a.v), "-") {
			return fmt.Errorf("%s %q starts with '-', which git would take for an option; give a plain %s", a.what, Redact(a.v), a.what)
		}
	}
	return nil
}

// GitCheckout puts url at branch/commit in dir: a fresh clone lands in a temporary directory
// and is renamed into place, so a failed clone never leaves a half checkout behind; an
// existing checkout is fetched and moved to the commit (or the branch's head).
func GitCheckout(ctx context.Context, url, branch, commit, dir string, recursive bool) error {
	if err := CheckGitArgs(url, branch, commit); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, ".git")); err == nil {
		if err := Command(ctx, dir, gitEnv, "git", "fetch", "--quiet", "origin"); err != nil {
			return err
		}
		ref := commit
		if ref == "" && branch != "" {
			ref = "origin/" + branch
		}
		if ref == "" {
			return nil
		}
		return Command(ctx, dir, gitEnv, "git", "checkout", "--quiet", "--force", ref, "--")
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
		args = append(args, "--branch="+branch)
	}
	if err := Command(ctx, "", gitEnv, "git", append(args, "--", url, tmp)...); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	if commit != "" {
		if err := Command(ctx, tmp, gitEnv, "git", "checkout", "--quiet", commit, "--"); err != nil {
			_ = os.RemoveAll(tmp)
			return fmt.Errorf("commit %s of %s: %w", commit, Redact(url), err)
		}
	}
	_ = os.RemoveAll(dir)
	return os.Rename(tmp, dir)
}
