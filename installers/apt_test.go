package installers_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/installers"
)

// dpkg knows git (the installers need it, make test has it); a made-up package is missing, and
// without --apt the sentence names it and says how to install it.
func TestPackagesOnThisDebian(t *testing.T) {
	ctx := context.Background()
	missing, err := installers.MissingPackages(ctx, []string{"git", "machine-no-such-package"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(missing, []string{"machine-no-such-package"}) {
		t.Fatalf("missing = %v, want only the made-up package", missing)
	}
	if err := installers.EnsurePackages(ctx, []string{"git"}, false); err != nil {
		t.Fatalf("git is installed, yet: %v", err)
	}
	err = installers.EnsurePackages(ctx, []string{"git", "machine-no-such-package"}, false)
	if err == nil || !strings.Contains(err.Error(), "apt-get install -y machine-no-such-package") || !strings.Contains(err.Error(), "--apt") {
		t.Fatalf("err = %v, want the missing package and the fix", err)
	}
}

func TestPackagesWithoutDpkg(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := installers.MissingPackages(context.Background(), []string{"git"})
	if err == nil || !strings.Contains(err.Error(), "not a Debian system") {
		t.Fatalf("err = %v", err)
	}
}
