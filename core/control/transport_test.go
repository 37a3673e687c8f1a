package control_test

import (
	"bufio"
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/control"
)

type core struct{}

func (core) Snapshot() control.Snapshot { return control.Snapshot{Machine: control.Machine{ID: "box"}} }
func (core) Changes() (events, readings <-chan struct{}, stop func()) {
	return make(chan struct{}), make(chan struct{}), func() {}
}
func (core) Do(context.Context, control.Command) control.Result {
	return control.Result{OK: true, Message: "done"}
}

func serve(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control.sock")
	srv, err := control.Listen(path, core{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.HelloTimeout, srv.IdleTimeout = 100*time.Millisecond, 300*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return path
}

// closed reads until the server closes the connection; it fails the test if that takes more
// than a generous bound (the server's timeouts are a fraction of a second).
func closed(t testing.TB, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	for {
		if _, err := r.ReadString('\n'); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the server kept the connection open")
			}
			return
		}
	}
}

func TestClientsThatNeverSayHelloAreDropped(t *testing.T) {
	c, err := net.Dial("unix", serve(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	closed(t, c)
}

func TestIdleClientsAreDropped(t *testing.T) {
	c, err := net.Dial("unix", serve(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(`{"v":1}` + "\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(line, `"box"`) {
		t.Fatalf("first snapshot: %q %v", line, err)
	}
	closed(t, c) // says nothing more
}

func TestConsoleCommandsOverTheSocket(t *testing.T) {
	client, err := control.Dial(context.Background(), serve(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	res, err := client.Do(context.Background(), control.Command{Op: control.Drain})
	if err != nil || !res.OK || res.Message != "done" {
		t.Fatalf("Do = %+v %v", res, err)
	}
}
