package config_test

import (
	"os"
	"strings"
	"testing"
)

func TestJobNetworkSettings(t *testing.T) {
	c, err := load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.AllowPrivateNetworks) != 0 || !c.BrowserSandbox || c.BrowserUser != "nobody" {
		t.Errorf("defaults: allow %v, sandbox %v, user %q; want nothing allowed, the sandbox on, nobody", c.AllowPrivateNetworks, c.BrowserSandbox, c.BrowserUser)
	}
	c, err = load(map[string]string{"MACHINE_ALLOW_PRIVATE_NETWORKS": "10.20.0.0/16, 127.0.0.1"})
	if err != nil || len(c.AllowPrivateNetworks) != 2 || c.AllowPrivateNetworks[1].String() != "127.0.0.1/32" {
		t.Fatalf("allow-list = %v, %v", c.AllowPrivateNetworks, err)
	}
	_, err = load(map[string]string{"MACHINE_ALLOW_PRIVATE_NETWORKS": "10.0.0.0/8,internal.example", "BROWSER_SANDBOX": "maybe"})
	for _, want := range []string{`MACHINE_ALLOW_PRIVATE_NETWORKS: "internal.example" is not an IP address or a CIDR`, "BROWSER_SANDBOX"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("problems %v lack %q", err, want)
		}
	}
}

// As root, the browser's user must exist and, with the sandbox on, not be root.
func TestBrowserUserAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("BROWSER_USER is read only when the machine runs as root")
	}
	for env, want := range map[string]string{
		"no-such-user-here": "is not a user of this system",
		"root":              "Chromium has no sandbox",
		"0":                 "Chromium has no sandbox",
	} {
		if _, err := load(map[string]string{"BROWSER_USER": env}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("BROWSER_USER=%s: %v, want %q", env, err, want)
		}
	}
	if _, err := load(map[string]string{"BROWSER_USER": "root", "BROWSER_SANDBOX": "false"}); err != nil {
		t.Errorf("root without the sandbox is the operator's choice: %v", err)
	}
}
