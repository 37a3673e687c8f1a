package testutil

import (
	"bytes"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Machine is a running `machine --no-tui` process: the one launcher the process tests, the
// bench and the chaos scenarios share.
type Machine struct {
	Cmd  *exec.Cmd
	Port int // its HTTP port (MACHINE_HEALTH_PORT)

	out  syncBuffer
	done chan struct{}
	err  error // how it exited, once done is closed
}

// StartMachine runs bin --no-tui with env (KEY=VALUE entries, used as given: pass os.Environ()
// first to inherit) and MACHINE_HEALTH_PORT set to a free port unless env sets it. The process
// has its own process group (so a kill reaches its services too) and dies with its parent.
func StartMachine(bin string, env []string) (*Machine, error) {
	return StartCommand([]string{bin, "--no-tui"}, env)
}

// StartCommand is StartMachine for a command line that ends up running the machine, e.g. a
// shell that sets a limit first and then execs it.
func StartCommand(argv []string, env []string) (*Machine, error) {
	m := &Machine{done: make(chan struct{})}
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "MACHINE_HEALTH_PORT="); ok {
			m.Port, _ = strconv.Atoi(v)
		}
	}
	if m.Port == 0 {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		m.Port = port
		env = append(env, "MACHINE_HEALTH_PORT="+strconv.Itoa(port))
	}
	m.Cmd = exec.Command(argv[0], argv[1:]...)
	m.Cmd.Env = env
	m.Cmd.Stdout, m.Cmd.Stderr = &m.out, &m.out
	m.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := m.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w (build it first: make build)", argv[0], err)
	}
	go func() {
		m.err = m.Cmd.Wait()
		close(m.done)
	}()
	return m, nil
}

// URL is the address of one of the machine's HTTP routes, e.g. m.URL("/status").
func (m *Machine) URL(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", m.Port, path) }

// WaitReady waits until /ready answers 200; it fails when the machine exits first or timeout
// passes, with the machine's output.
func (m *Machine) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(m.URL("/ready")); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-m.done:
			return fmt.Errorf("machine exited before it was ready (%v):\n%s", m.err, m.Output())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return fmt.Errorf("machine not ready within %s:\n%s", timeout, m.Output())
}

// Output is what the machine wrote so far.
func (m *Machine) Output() string { return m.out.String() }

// Done is closed when the machine exited; Err then says how.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Err is how the machine exited, once Done is closed.
func (m *Machine) Err() error {
	<-m.done
	return m.err
}

// Stop sends SIGTERM (a drain) and waits; after grace it kills the process group.
func (m *Machine) Stop(grace time.Duration) error {
	_ = m.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(grace):
		m.Kill()
	}
	return m.err
}

// Kill kills the machine's process group at once (kill -9) and waits for it.
func (m *Machine) Kill() {
	_ = syscall.Kill(-m.Cmd.Process.Pid, syscall.SIGKILL)
	<-m.done
}

// syncBuffer is a buffer the process's two output streams write to at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
