package chaos_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/emp-job-queue/machine/internal/chaos"
)

// TestQuickChaos is the quick version of `make chaos`: every scenario with a few short jobs.
// No job may be lost; a crash may re-run at most the jobs that were running on the crashed
// machine (2 slots), once each.
func TestQuickChaos(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "machine")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/machine").CombinedOutput(); err != nil {
		t.Fatalf("build machine: %v\n%s", err, out)
	}
	results, err := chaos.Run(chaos.Params{Machine: bin, Dir: dir, Jobs: 8, JobMS: 400})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		t.Logf("%-30s submitted %d completed %d failed %d lost %d duplicates %d %s",
			r.Scenario, r.Submitted, r.Completed, r.Failed, r.Lost, r.Duplicates, r.Note)
		if r.Lost != 0 || r.Failed != 0 || r.Completed != r.Submitted {
			t.Errorf("%s: %d lost, %d failed of %d", r.Scenario, r.Lost, r.Failed, r.Submitted)
		}
		if r.Duplicates > 2*r.Crashes {
			t.Errorf("%s: %d duplicate executions for %d crashes of a 2-slot machine", r.Scenario, r.Duplicates, r.Crashes)
		}
	}
	if len(results) == 0 {
		t.Fatal("no scenario ran")
	}
	_ = os.Remove(bin)
}
