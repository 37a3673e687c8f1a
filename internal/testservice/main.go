// Command testservice is a small service for supervisor tests and benchmarks. Its behaviour is
// set by environment variables, so a test can make it crash, hang on SIGTERM, never become
// ready, grow its memory or leave a child process behind.
//
//	PORT            HTTP port; GET / answers 200 once ready
//	READY_AFTER_MS  delay before / answers 200 (503 until then)
//	NEVER_READY     1: / always answers 503
//	CRASH_AFTER_MS  exit 1 after this long
//	IGNORE_TERM     1: ignore SIGTERM (only SIGKILL stops it)
//	GROW_MB_PER_S   allocate and touch this many MB a second
//	SPAWN_CHILD     1: start a `sleep 3600` child in the same process group
//	LOG_EVERY_MS    print a numbered line this often
package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func envInt(k string) int {
	n, _ := strconv.Atoi(os.Getenv(k))
	return n
}

func main() {
	start := time.Now()
	fmt.Printf("testservice pid %d starting on port %s\n", os.Getpid(), os.Getenv("PORT"))
	if os.Getenv("IGNORE_TERM") == "1" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		go func() {
			<-sig
			fmt.Println("testservice got SIGTERM, exiting")
			os.Exit(0)
		}()
	}
	if os.Getenv("SPAWN_CHILD") == "1" {
		child := exec.Command("sleep", "3600")
		if err := child.Start(); err == nil {
			fmt.Printf("testservice child pid %d\n", child.Process.Pid)
		}
	}
	if ms := envInt("CRASH_AFTER_MS"); ms > 0 {
		time.AfterFunc(time.Duration(ms)*time.Millisecond, func() {
			fmt.Fprintln(os.Stderr, "testservice crashing as asked")
			os.Exit(1)
		})
	}
	if mb := envInt("GROW_MB_PER_S"); mb > 0 {
		go func() {
			for range time.Tick(100 * time.Millisecond) {
				b := make([]byte, mb<<20/10)
				for i := range b {
					b[i] = 1
				}
				hoard = append(hoard, b)
			}
		}()
	}
	if ms := envInt("LOG_EVERY_MS"); ms > 0 {
		go func() {
			for i := 1; ; i++ {
				time.Sleep(time.Duration(ms) * time.Millisecond)
				fmt.Printf("tick %d\n", i)
			}
		}()
	}
	readyAfter := time.Duration(envInt("READY_AFTER_MS")) * time.Millisecond
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if os.Getenv("NEVER_READY") == "1" || time.Since(start) < readyAfter {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil); err != nil {
		fmt.Fprintln(os.Stderr, "testservice:", err)
		os.Exit(2)
	}
}

// hoard holds what GROW_MB_PER_S allocates, so it stays resident.
var hoard [][]byte
