// Package redistest starts a real redis-server on a free port for tests and benchmarks. It
// never touches a server it did not start.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/internal/testutil"
)

// Server is a redis-server child process.
type Server struct {
	Addr string
	URL  string
	cmd  *exec.Cmd
	dir  string
	port int
}

// TB is the part of testing.TB the helper needs.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

// Start starts a redis-server for the test and stops it when the test ends.
func Start(t TB) *Server {
	t.Helper()
	s, err := StartServer(t.TempDir())
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// StartTemp starts a redis-server in a fresh temporary directory (named after prefix); stop
// stops the server and removes the directory.
func StartTemp(prefix string) (srv *Server, stop func(), err error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, nil, err
	}
	if srv, err = StartServer(dir); err != nil {
		_ = os.RemoveAll(dir)
		return nil, nil, err
	}
	return srv, func() { srv.Stop(); _ = os.RemoveAll(dir) }, nil
}

// StartServer starts a redis-server with its files in dir.
func StartServer(dir string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server is not installed: run `make test`, which installs it, or `apt-get install -y redis-server`")
	}
	port, err := testutil.FreePort()
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, port: port}
	if err := s.start(bin); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) start(bin string) error {
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	s.URL = "redis://" + s.Addr
	s.cmd = exec.Command(bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir,
		"--logfile", filepath.Join(s.dir, "redis.log"))
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			return fmt.Errorf("redis-server on %s did not answer within 10s: %v\n%s", s.Addr, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Client returns a new client for the server; the caller closes it.
func (s *Server) Client() *redis.Client { return redis.NewClient(&redis.Options{Addr: s.Addr}) }

// Pid is the server's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Freeze stops the server's process (SIGSTOP): connections stay open but nothing answers, as
// in a network partition or a stalled host. Thaw resumes it with its data.
func (s *Server) Freeze() error { return s.cmd.Process.Signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server.
func (s *Server) Thaw() error { return s.cmd.Process.Signal(syscall.SIGCONT) }

// Stop kills the server by its pid.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // a frozen server cannot die of SIGKILL until resumed on some kernels
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// RestartKeepingData saves the dataset, stops the server and starts it again on the same port
// from what it saved: a Redis restart, as an operator or a crash with persistence would do it.
func (s *Server) RestartKeepingData() error {
	rdb := s.Client()
	err := rdb.Save(context.Background()).Err()
	rdb.Close()
	if err != nil {
		return fmt.Errorf("save before restart: %w", err)
	}
	return s.Restart()
}

// Restart stops the server and starts it again on the same port, with whatever it saved (a
// plain restart keeps nothing: the server runs without persistence).
func (s *Server) Restart() error {
	s.Stop()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return err
	}
	return s.start(bin)
}
