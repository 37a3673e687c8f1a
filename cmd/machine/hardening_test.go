package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/internal/redistest"
)

// A client that opens far more idle keep-alive connections than the machine has file
// descriptors (here the machine runs under `ulimit -n 256`) used to take every descriptor:
// /health stopped answering and Redis could not be reached again. Now the HTTP server holds at
// most MACHINE_HTTP_MAX_CONNS connections, closing the longest-idle one for a newcomer, so
// /health answers and the machine reconnects to a restarted Redis and runs jobs.
func TestIdleConnectionFloodLeavesHealthAndRedis(t *testing.T) {
	srv := redistest.Start(t)
	env := map[string]string{"HUB_REDIS_URL": srv.URL, "MACHINE_ID": "flooded", "WORKER_CONNECTORS": "simulation:1",
		"WORKER_SIMULATION_PROCESSING_TIME": "0.05", "MACHINE_RUN_DIR": t.TempDir(), "MACHINE_HTTP_MAX_CONNS": "32",
		"MACHINE_HTTP_ADDR": "127.0.0.1"}
	p := startMachineCmd(t, env, []string{"/bin/sh", "-c", `ulimit -n 256 && exec "$0" --no-tui`, binary})
	addr := fmt.Sprintf("127.0.0.1:%d", p.Port)
	const flood = 600
	conns := make([]net.Conn, 0, flood)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := range flood {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	// Read the answers, where they come: a connection the machine closed to make room answers
	// nothing, and that is fine. Bounded, so that the old behaviour (no answer ever) fails below
	// rather than hanging here.
	var wg sync.WaitGroup
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range conns {
		wg.Go(func() {
			_ = c.SetReadDeadline(deadline)
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + "/health")
	if err != nil {
		t.Fatalf("/health behind %d idle connections: %v", flood, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/health behind %d idle connections = %d", flood, resp.StatusCode)
	}
	// Docker's HEALTHCHECK finds the machine on the address it is bound to.
	if out, err := command(map[string]string{"MACHINE_HEALTH_PORT": fmt.Sprint(p.Port), "MACHINE_HTTP_ADDR": "127.0.0.1"}, "health").CombinedOutput(); err != nil {
		t.Errorf("machine health: %v\n%s", err, out)
	}
	// Redis restarts: the machine needs new descriptors to reach it again.
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	before := completed(p.status(t))
	submit(t, env, "--count", "3")
	waitUntil(t, "3 jobs completed after the Redis restart", func() bool { return completed(p.status(t)) >= before+3 })
}
