// Command server runs the fake ComfyUI on the port ComfyUI's main.py would take
// (--listen HOST --port N; other flags are accepted and ignored), for end-to-end tests of the
// machine supervising "ComfyUI".
package main

import (
	"fmt"
	"net/http"
	"os"

	"github.com/emp-job-queue/machine/internal/fakecomfy"
)

func main() {
	host, port := "127.0.0.1", "8188"
	for i := 1; i < len(os.Args)-1; i++ {
		switch os.Args[i] {
		case "--listen":
			host = os.Args[i+1]
		case "--port":
			port = os.Args[i+1]
		}
	}
	fmt.Printf("fake ComfyUI on %s:%s, args %v\n", host, port, os.Args[1:])
	if err := http.ListenAndServe(host+":"+port, fakecomfy.New().Handler()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
