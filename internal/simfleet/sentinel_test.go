package simfleet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/internal/redistest"
	"github.com/emp-job-queue/machine/internal/simfleet"
)

// A fleet reaches Redis through Sentinel; the master is killed while jobs flow, the sentinel
// promotes the replica, and every submitted job still completes. Submissions wait for the
// replica (WAIT 1), as a broker that must not lose them needs; a machine's write lost in the
// failover is recovered by its lease.
func TestSentinelFailoverLosesNoJob(t *testing.T) {
	master := redistest.Start(t)
	replica := startRedis(t, "--replicaof", "127.0.0.1", strings.Split(master.Addr, ":")[1])
	waitFor(t, "the replica to sync", func() bool {
		return strings.Contains(redis.NewClient(&redis.Options{Addr: replica}).Info(context.Background(), "replication").Val(), "master_link_status:up")
	})
	sentinel := startSentinel(t, master.Addr)
	ep := broker.Endpoint{Sentinels: []string{sentinel}, Master: "mymaster"}

	f, err := simfleet.Start(simfleet.Config{Machines: 5, Service: "sim", PollInterval: 200 * time.Millisecond,
		JobTime: time.Millisecond, Endpoint: &ep, Lease: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	rdb, err := broker.Dial(ep, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	b := broker.New(rdb)
	ctx := context.Background()

	const jobs = 120
	var ids []string
	for i := range jobs {
		if i == jobs/3 {
			master.Stop() // SIGKILL, mid-load
		}
		id := fmt.Sprintf("job-%03d", i)
		waitFor(t, "a submission to land", func() bool {
			if _, err := b.Submit(ctx, broker.JobSpec{ID: id, Service: "sim", Payload: json.RawMessage(`{}`)}); err != nil {
				return false
			}
			return i >= jobs/3 || rdb.Wait(ctx, 1, time.Second).Val() >= 1 // after the kill the master has no replica
		})
		ids = append(ids, id)
		time.Sleep(5 * time.Millisecond)
	}
	if role := rdb.Do(ctx, "ROLE").Val(); fmt.Sprint(role) == "" || !strings.Contains(fmt.Sprint(role), "master") {
		t.Fatalf("the client talks to a %v", role)
	}
	for _, id := range ids {
		waitFor(t, "job "+id+" to complete", func() bool {
			return rdb.HGet(ctx, "job:"+id, "status").Val() == "completed"
		})
	}
}

func waitFor(t *testing.T, what string, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func startProcess(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("redis-server", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server %v: %v", args, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

func startRedis(t *testing.T, args ...string) string {
	port := freePort(t)
	startProcess(t, append([]string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir()}, args...)...)
	addr := "127.0.0.1:" + port
	waitFor(t, "redis-server on "+addr, func() bool {
		return redis.NewClient(&redis.Options{Addr: addr}).Ping(context.Background()).Err() == nil
	})
	return addr
}

// startSentinel runs redis-server in sentinel mode (what the redis-sentinel package installs)
// monitoring master with a quorum of 1 and a one-second down-after.
func startSentinel(t *testing.T, master string) string {
	port := freePort(t)
	dir := t.TempDir()
	host, mport, _ := net.SplitHostPort(master)
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("port %s\nbind 127.0.0.1\ndir %s\nsentinel monitor mymaster %s %s 1\n"+
		"sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n", port, dir, host, mport)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	startProcess(t, conf, "--sentinel")
	addr := "127.0.0.1:" + port
	waitFor(t, "the sentinel to know the master", func() bool {
		s := redis.NewSentinelClient(&redis.Options{Addr: addr})
		defer s.Close()
		return s.GetMasterAddrByName(context.Background(), "mymaster").Err() == nil
	})
	return addr
}
