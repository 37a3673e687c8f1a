package migrate

import (
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/emp-job-queue/machine/core/config"
)

var secretName = regexp.MustCompile(`KEY|SECRET|TOKEN|PASSWORD|PASS$|AUTH`)

// Secret reports whether a variable holds a secret: its value is never printed.
func Secret(name, value string) bool {
	if secretName.MatchString(name) {
		return true
	}
	return strings.Contains(value, "://") && config.RedactURL(value) != value
}

// quote writes a value as the old environment builder did: single quotes around values with
// spaces, commas, quotes or JSON.
func quote(v string) string {
	if v == "" || !strings.ContainsAny(v, " \t,;&|<>(){}[]$`\"'\\#") || strings.HasPrefix(v, "${") {
		return v
	}
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}

// WriteEnv writes the new configuration as an env file. Without secrets, a secret's line is
// a comment that says where its value is.
func (r *Report) WriteEnv(w io.Writer, secrets bool) {
	for _, k := range r.Keys() {
		v := r.Env[k]
		if !secrets && Secret(k, v) {
			fmt.Fprintf(w, "# %s=(secret, not shown; `machine migrate … --out FILE` writes it)\n", k)
			continue
		}
		fmt.Fprintf(w, "%s=%s\n", k, quote(v))
	}
}

// Write writes the whole report: the new configuration (secrets hidden unless secrets is
// set), then, as comments, what became of the old variables, what must change, the PM2 apps
// and the behaviour that differs.
func (r *Report) Write(w io.Writer, source string, secrets bool) {
	fmt.Fprintf(w, "# New configuration of this machine, migrated from %s.\n", source)
	r.WriteEnv(w, secrets)
	section := func(title string, lines []string) {
		if len(lines) == 0 {
			return
		}
		fmt.Fprintf(w, "#\n# %s\n", title)
		for _, l := range lines {
			fmt.Fprintf(w, "#   - %s\n", l)
		}
	}
	var renamed, ignored []string
	for _, n := range r.Notes {
		switch n.Treatment {
		case config.Renamed:
			renamed = append(renamed, n.Sentence+".")
		case config.Ignored:
			ignored = append(ignored, n.Sentence+".")
		}
	}
	section("Must change before this machine starts:", suffix(r.Refused, "."))
	section("Old variables read under their new names:", renamed)
	section("Old variables that have no effect here:", ignored)
	if len(r.Kept) > 0 {
		section("Kept as they are (not variables of the old runtime):", []string{strings.Join(r.Kept, ", ")})
	}
	section("PM2 apps:", r.PM2)
	section("What changes in behaviour:", r.Changes)
	if r.Problem != nil {
		section("The new configuration does not load yet:", strings.Split(strings.TrimPrefix(r.Problem.Error(), "invalid configuration: "), "\n  - "))
	}
}

func suffix(lines []string, s string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = strings.TrimSuffix(l, s) + s
	}
	return out
}
