package config_test

import (
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/config"
)

func TestHardeningSettings(t *testing.T) {
	c, err := load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "0.0.0.0" || c.HTTPListenAddr() != "0.0.0.0:9090" || c.HTTPMaxConns != 256 || c.AllowUnverifiedDownloads {
		t.Errorf("defaults: addr %q (%s), max conns %d, unverified %v", c.HTTPAddr, c.HTTPListenAddr(), c.HTTPMaxConns, c.AllowUnverifiedDownloads)
	}
	for in, want := range map[string]string{"127.0.0.1": "127.0.0.1:9090", "localhost": "127.0.0.1:9090", "::1": "[::1]:9090", "[::]": "[::]:9090"} {
		c, err := load(map[string]string{"MACHINE_HTTP_ADDR": in})
		if err != nil || c.HTTPListenAddr() != want {
			t.Errorf("MACHINE_HTTP_ADDR=%s: %v %v, want %s", in, c, err, want)
		}
	}
	_, err = load(map[string]string{"MACHINE_HTTP_ADDR": "0.0.0.0:9090", "MACHINE_HTTP_MAX_CONNS": "0",
		"MACHINE_ALLOW_UNVERIFIED_DOWNLOADS": "sometimes"})
	for _, want := range []string{"MACHINE_HTTP_ADDR", "MACHINE_HEALTH_PORT", "MACHINE_HTTP_MAX_CONNS", "MACHINE_ALLOW_UNVERIFIED_DOWNLOADS"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("bad hardening settings: %v; want it to name %s", err, want)
		}
	}
	for addr, want := range map[string]string{"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "10.1.2.3": "10.1.2.3", "[::1]": "::1"} {
		if got := config.LocalHTTPHost(addr); got != want {
			t.Errorf("LocalHTTPHost(%q) = %s, want %s", addr, got, want)
		}
	}
}
