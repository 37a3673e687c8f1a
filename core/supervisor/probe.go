package supervisor

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"time"
)

// Probe says how to tell that a service is ready to take work.
type Probe struct {
	Kind   string   // "http" (GET answers 2xx-4xx), "tcp" (accepts a connection), "exec" (exits 0), "" (ready when started)
	Target string   // URL for http, host:port for tcp
	Cmd    []string // command for exec
	Every  time.Duration
}

// String describes the probe for people: "http http://127.0.0.1:8188/", "none (ready when started)".
func (p Probe) String() string {
	switch p.Kind {
	case "":
		return "none (ready when started)"
	case "exec":
		return "exec " + strings.Join(p.Cmd, " ")
	default:
		return p.Kind + " " + p.Target
	}
}

// check runs the probe once.
func (p Probe) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	switch p.Kind {
	case "":
		return nil
	case "http":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.Target, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		// The old orchestrator counted 404 as ready too: a server that answers is up.
		if resp.StatusCode >= 500 {
			return fmt.Errorf("%s answered %s", p.Target, resp.Status)
		}
		return nil
	case "tcp":
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", p.Target)
		if err != nil {
			return err
		}
		return c.Close()
	case "exec":
		if len(p.Cmd) == 0 {
			return fmt.Errorf("exec probe without a command")
		}
		if out, err := exec.CommandContext(ctx, p.Cmd[0], p.Cmd[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	default:
		return fmt.Errorf("unknown probe kind %q; use http, tcp or exec", p.Kind)
	}
}
