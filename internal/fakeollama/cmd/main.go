// Command cmd is a fake `ollama` binary for end-to-end tests: `ollama serve` runs the fake
// daemon on OLLAMA_HOST (host:port, default 127.0.0.1:11434) and keeps pulled models in
// OLLAMA_MODELS, as the real one does; `ollama --version` prints the real format. Tests build
// it under the name "ollama" and let the machine find and supervise it.
package main

import (
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/emp-job-queue/machine/internal/fakeollama"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "Usage: ollama [command]; this fake knows serve and --version")
		os.Exit(1)
	}
	switch os.Args[1] {
	case "-v", "--version", "version":
		fmt.Println("ollama version is " + fakeollama.Version)
	case "serve":
		addr := strings.TrimPrefix(strings.TrimPrefix(os.Getenv("OLLAMA_HOST"), "http://"), "https://")
		if addr == "" {
			addr = "127.0.0.1:11434"
		}
		fmt.Printf("time=now level=INFO source=routes.go msg=\"Listening on %s (version %s)\" OLLAMA_MODELS=%s\n",
			addr, fakeollama.Version, os.Getenv("OLLAMA_MODELS"))
		if err := http.ListenAndServe(addr, fakeollama.New(os.Getenv("OLLAMA_MODELS")).Handler()); err != nil {
			fmt.Fprintln(os.Stderr, "Error: listen tcp "+addr+": "+err.Error())
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "Error: unknown command %q for \"ollama\"\n", os.Args[1])
		os.Exit(1)
	}
}
