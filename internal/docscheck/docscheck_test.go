package docscheck_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/internal/docscheck"
)

var list = flag.Bool("list", false, "print every error sentence found, for writing docs/troubleshooting.md")

// machineDirs are the directories of this module's packages compiled into cmd/machine.
func machineDirs(t *testing.T, root string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if .Module}}{{if .Module.Main}}{{.Dir}}{{end}}{{end}}", "./cmd/machine")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var dirs []string
	for _, d := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, d)
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, rel)
	}
	return dirs
}

func sentences(t *testing.T) ([]docscheck.Sentence, string) {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	found, err := docscheck.Find(root, machineDirs(t, root))
	if err != nil {
		t.Fatal(err)
	}
	if len(found) < 50 {
		t.Fatalf("only %d error sentences found; the scan is broken", len(found))
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "troubleshooting.md"))
	if err != nil {
		t.Fatal(err)
	}
	return found, string(doc)
}

// Every error sentence the machine can print is in docs/troubleshooting.md (its fixed text,
// with the cause and the fix around it).
func TestTroubleshootingCoversEveryErrorSentence(t *testing.T) {
	found, doc := sentences(t)
	if *list {
		for _, s := range found {
			fmt.Printf("%s\t%s\n", s.Pos, s.Text)
		}
	}
	missing := 0
	for _, s := range found {
		if !strings.Contains(doc, s.Key) {
			missing++
			t.Errorf("%s: %q is not in docs/troubleshooting.md (it must contain %q, with its cause and fix)", s.Pos, s.Text, s.Key)
		}
	}
	if missing > 0 {
		t.Logf("%d of %d sentences missing; `go test ./internal/docscheck -run Troubleshooting -list` lists them all", missing, len(found))
	}
}

// Every sentence the document explains is one the code still prints: each "### `…`" heading
// holds the fixed text of a sentence of the code.
func TestTroubleshootingHasNoStaleEntries(t *testing.T) {
	found, doc := sentences(t)
	for _, line := range strings.Split(doc, "\n") {
		heading, ok := strings.CutPrefix(line, "### `")
		if !ok {
			continue
		}
		heading = strings.TrimSuffix(heading, "`")
		live := false
		for _, s := range found {
			if strings.Contains(heading, s.Key) {
				live = true
				break
			}
		}
		if !live {
			t.Errorf("docs/troubleshooting.md explains %q, which no code prints any more; remove or update it", heading)
		}
	}
}

var update = flag.Bool("update", false, "rewrite the generated table of docs/migration.md")

// docs/migration.md holds the table of every old variable exactly as core/config classifies
// them.
func TestMigrationTableListsEveryOldVariable(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "migration.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	begin, end := strings.Index(doc, docscheck.TableBegin), strings.Index(doc, docscheck.TableEnd)
	if begin < 0 || end < begin {
		t.Fatalf("docs/migration.md lacks the markers %q … %q", docscheck.TableBegin, docscheck.TableEnd)
	}
	want := docscheck.TableBegin + "\n" + docscheck.MigrationTable() + docscheck.TableEnd
	if got := doc[begin : end+len(docscheck.TableEnd)]; got != want {
		if *update {
			if err := os.WriteFile(path, []byte(doc[:begin]+want+doc[end+len(docscheck.TableEnd):]), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Error("the table of old variables in docs/migration.md is not what core/config says; run go test ./internal/docscheck -run Migration -args -update")
	}
}
