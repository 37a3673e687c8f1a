package installers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// MissingPackages returns the Debian packages of pkgs that dpkg does not list as installed.
func MissingPackages(ctx context.Context, pkgs []string) ([]string, error) {
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		return nil, fmt.Errorf("dpkg-query is not on PATH, so this is not a Debian system; install %s by hand", strings.Join(pkgs, ", "))
	}
	var missing []string
	for _, p := range pkgs {
		out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${db:Status-Status}", p).Output()
		var exit *exec.ExitError
		switch {
		case err == nil && strings.TrimSpace(string(out)) == "installed":
		case err == nil || errors.As(err, &exit):
			missing = append(missing, p) // unknown to dpkg, or known but not installed
		default:
			return nil, fmt.Errorf("dpkg-query %s: %w", p, err)
		}
	}
	return missing, nil
}

// EnsurePackages makes sure the Debian packages are installed. With allowApt it installs the
// missing ones with apt-get (which needs root); without, it names them and says how.
func EnsurePackages(ctx context.Context, pkgs []string, allowApt bool) error {
	missing, err := MissingPackages(ctx, pkgs)
	if err != nil || len(missing) == 0 {
		return err
	}
	list := strings.Join(missing, " ")
	if !allowApt {
		return fmt.Errorf("the Debian packages %s are not installed; install them (apt-get install -y %s) or pass --apt to let the machine do it", list, list)
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if err := Command(ctx, "", env, "apt-get", "update", "-qq"); err != nil {
		return fmt.Errorf("install %s: %w", list, err)
	}
	args := append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)
	if err := Command(ctx, "", env, "apt-get", args...); err != nil {
		return fmt.Errorf("install %s: %w", list, err)
	}
	still, err := MissingPackages(ctx, missing)
	if err == nil && len(still) > 0 {
		err = fmt.Errorf("apt-get ran but %s are still not installed; install them by hand", strings.Join(still, " "))
	}
	return err
}
