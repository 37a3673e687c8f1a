package docscheck

import (
	"fmt"
	"strings"

	"github.com/emp-job-queue/machine/core/config"
)

// Markers around the generated table of old variables in docs/migration.md.
const (
	TableBegin = "<!-- old-variables:begin (generated: go test ./internal/docscheck -run Migration -args -update) -->"
	TableEnd   = "<!-- old-variables:end -->"
)

// MigrationTable is the table of every old variable and its treatment, from core/config.
func MigrationTable() string {
	var b strings.Builder
	b.WriteString("| Old variable | Treatment | Now | Why |\n|---|---|---|---|\n")
	for _, v := range config.OldVariables() {
		now := "same name"
		switch v.Treatment {
		case config.Renamed:
			now = "`" + v.Replacement + "`"
		case config.Ignored:
			now = "–"
		case config.Refused:
			now = "refused"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", v.Name, v.Treatment, now, strings.ReplaceAll(v.Note, "|", "\\|"))
	}
	return b.String()
}
