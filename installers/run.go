package installers

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/emp-job-queue/machine/internal/childenv"
)

// Command runs a program for an install step with the environment supervised services get
// (childenv.Base) plus env: git, pip and a manifest's custom scripts run code from the network
// and never see the machine's secrets. When it fails, the error says which program failed and
// shows the end of its output, with credentials in URLs cut out.
func Command(ctx context.Context, dir string, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = childenv.Base(env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s failed (%v): %s", Redact(name+" "+strings.Join(args, " ")), err, Redact(tail(out.String(), 600)))
	}
	return nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}
