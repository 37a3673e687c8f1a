// Package testutil holds the few helpers tests, the bench and chaos share: a free loopback
// port, a binary built from a package of this module, and a running machine process.
package testutil

import (
	"fmt"
	"net"
	"os/exec"
	"testing"
)

// FreePort returns a TCP port free on 127.0.0.1 at the time of the call.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Build compiles the package at pkg (a path relative to the caller's directory) into out, with
// extra environment such as CGO_ENABLED=0.
func Build(pkg, out string, env ...string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if len(env) > 0 {
		cmd.Env = append(cmd.Environ(), env...)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// Port is FreePort for tests: the test fails when no port can be had.
func Port(t testing.TB) int {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}
