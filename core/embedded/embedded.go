// Package embedded runs an in-process broker (miniredis) for a machine started with no
// HUB_REDIS_URL, so `make run` works on a bare machine. Production uses a real Redis.
package embedded

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/alicebob/miniredis/v2"
)

// PreferredAddr is where the embedded broker listens when that port is free.
const PreferredAddr = "127.0.0.1:6379"

// Broker is a running embedded broker.
type Broker struct {
	srv *miniredis.Miniredis
	URL string
}

// Start listens on PreferredAddr, or on a free loopback port when that one is taken (for
// example by a real Redis, which is never touched).
func Start() (*Broker, error) {
	srv := miniredis.NewMiniRedis()
	if err := srv.StartAddr(PreferredAddr); err != nil {
		srv = miniredis.NewMiniRedis()
		if err := srv.StartAddr("127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("start the embedded broker: %w", err)
		}
	}
	return &Broker{srv: srv, URL: "redis://" + srv.Addr()}, nil
}

// Close stops the broker; its data is gone.
func (b *Broker) Close() { b.srv.Close() }

// URLFile is the file in the run directory that holds the embedded broker's URL, so that
// `machine submit` on the same host finds it.
func URLFile(runDir string) string { return filepath.Join(runDir, "broker.url") }

// Advertise writes the URL file atomically.
func (b *Broker) Advertise(runDir string) error {
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return fmt.Errorf("create run directory %s: %w", runDir, err)
	}
	tmp := URLFile(runDir) + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.URL+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	return os.Rename(tmp, URLFile(runDir))
}

// Withdraw removes the URL file if it still names this broker.
func (b *Broker) Withdraw(runDir string) {
	if data, err := os.ReadFile(URLFile(runDir)); err == nil && string(data) == b.URL+"\n" {
		_ = os.Remove(URLFile(runDir))
	}
}
