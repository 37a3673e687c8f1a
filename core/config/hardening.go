package config

import (
	"net"
	"strconv"
	"strings"
)

// DefaultHTTPAddr binds every interface, as the machine always did: the monitor, Prometheus and
// Docker's published port (-p 9090:9090 reaches the container's interface, not its loopback)
// read /health and /metrics from outside. What stays open there is read-only; the routes that
// change state or show logs need MACHINE_API_TOKEN. Set 127.0.0.1 on a shared host.
const DefaultHTTPAddr = "0.0.0.0"

// DefaultHTTPMaxConns leaves room for probes, scrapers and consoles while keeping the file
// descriptors Redis and the services need out of a client's reach.
const DefaultHTTPMaxConns = 256

// hardening reads the settings that bound what the network and job payloads can reach.
func (r *reader) hardening(c *Config) {
	c.HTTPAddr = r.str("MACHINE_HTTP_ADDR", DefaultHTTPAddr)
	host := strings.TrimSuffix(strings.TrimPrefix(c.HTTPAddr, "["), "]")
	if host == "localhost" {
		host = "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip == nil {
		r.problem("MACHINE_HTTP_ADDR %q is not an IP address; use 127.0.0.1 (this host only), 0.0.0.0 (every interface) or one interface's address, and give the port in MACHINE_HEALTH_PORT", c.HTTPAddr)
	} else {
		c.HTTPAddr = ip.String()
	}
	c.HTTPMaxConns = r.intRange("MACHINE_HTTP_MAX_CONNS", DefaultHTTPMaxConns, 1, 65536,
		"how many HTTP connections the machine holds at once, e.g. 256")
	c.AllowUnverifiedDownloads = r.boolean("MACHINE_ALLOW_UNVERIFIED_DOWNLOADS", false)
}

// HTTPListenAddr is where the HTTP server listens: MACHINE_HTTP_ADDR and MACHINE_HEALTH_PORT.
func (c *Config) HTTPListenAddr() string {
	return net.JoinHostPort(c.HTTPAddr, strconv.Itoa(c.HealthPort))
}

// LocalHTTPHost is the address a client on this host uses to reach the HTTP server: the bound
// address, or loopback when every interface is bound. addr is MACHINE_HTTP_ADDR as set (may be
// empty).
func LocalHTTPHost(addr string) string {
	host := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(addr), "["), "]")
	ip := net.ParseIP(host)
	switch {
	case host == "" || host == "localhost" || ip == nil:
		return "127.0.0.1"
	case ip.IsUnspecified():
		if ip.To4() == nil {
			return "::1"
		}
		return "127.0.0.1"
	}
	return ip.String()
}
