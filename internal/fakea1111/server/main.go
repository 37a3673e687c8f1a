// Command server runs the fake A1111 on the port A1111's webui.py would take (--port N,
// --listen for 0.0.0.0; other flags are accepted and ignored), for end-to-end tests of the
// machine supervising "A1111".
package main

import (
	"fmt"
	"net/http"
	"os"

	"github.com/emp-job-queue/machine/internal/fakea1111"
)

func main() {
	host, port := "127.0.0.1", "7861" // A1111's API-only default port
	for i := 1; i < len(os.Args); i++ {
		switch os.Args[i] {
		case "--listen":
			host = "0.0.0.0"
		case "--port":
			if i+1 < len(os.Args) {
				port = os.Args[i+1]
			}
		}
	}
	fmt.Printf("fake A1111 on %s:%s, args %v, CUDA_VISIBLE_DEVICES=%s\n", host, port, os.Args[1:], os.Getenv("CUDA_VISIBLE_DEVICES"))
	if err := http.ListenAndServe(host+":"+port, fakea1111.New().Handler()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
