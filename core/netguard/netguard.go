// Package netguard decides which network addresses the traffic a job causes may reach: the
// URLs in a job's payload, the pages a browser job opens and everything they load, the output
// files an API hands back. Jobs are untrusted, so by default they reach only public
// addresses: never this machine (loopback, its own interface addresses, its HTTP and DevTools
// ports), the cloud metadata endpoint (169.254.169.254, link-local), or the private network.
// An operator who needs a private network allows it by CIDR (MACHINE_ALLOW_PRIVATE_NETWORKS).
//
// The check runs on the address actually being connected to, inside the dialer (after DNS
// resolution, for every redirect and every retry), so a host name that resolves, or later
// re-resolves, to a private address (DNS rebinding) is refused just the same.
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Setting is the configuration variable that lists the networks jobs may reach although
// they are not public.
const Setting = "MACHINE_ALLOW_PRIVATE_NETWORKS"

// Policy says which addresses jobs may reach. The zero value refuses every address that is
// not public. A Policy is a value: copy it freely.
type Policy struct {
	// Allow lists networks jobs may reach although they are not public (the operator's
	// escape hatch; tests allow 127.0.0.1 to use local servers).
	Allow []netip.Prefix
	// LocalPorts are ports of this machine that stay refused even when Allow covers the
	// address: the browser's DevTools port, whose owner controls every tab, and the
	// machine's own HTTP port.
	LocalPorts []uint16
}

// RefusedError says a connection was refused by the policy.
type RefusedError struct {
	Target string         // what was dialled (host:port), when known
	Addr   netip.AddrPort // the address it resolved to
	Reason string         // why that address is closed to jobs
	Fixed  bool           // no allow-list opens it (the DevTools port)
}

func (e *RefusedError) Error() string {
	if !e.Addr.IsValid() {
		return fmt.Sprintf("%s is closed to jobs: %s", e.Target, e.Reason)
	}
	via := ""
	if h, _, err := net.SplitHostPort(e.Target); err == nil && h != e.Addr.Addr().String() {
		via = " (" + e.Target + ")"
	}
	msg := fmt.Sprintf("%s%s is closed to jobs: %s is %s", e.Addr, via, e.Addr.Addr(), e.Reason)
	if !e.Fixed {
		msg += "; jobs may reach only public addresses (an operator can allow a network with " + Setting + ")"
	}
	return msg
}

// IsRefused reports whether err (or an error it wraps) is a refusal, and returns it.
func IsRefused(err error) (*RefusedError, bool) {
	var re *RefusedError
	ok := errors.As(err, &re)
	return re, ok
}

// ParseAllowList reads a comma-separated list of CIDR networks or single IP addresses
// ("10.20.0.0/16, 127.0.0.1"). Host names are not accepted: the check runs on the address
// being connected to, and a name can resolve to anything.
func ParseAllowList(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%q is not an IP address or a CIDR network such as 10.0.0.0/8 (host names are not accepted: the check runs on the address connected to)", f)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// closed are the address ranges that are not public, most specific first, with the reason
// a refusal gives. IPv4-mapped IPv6 addresses are checked as IPv4.
var closed = []struct {
	net    netip.Prefix
	reason string
}{
	{netip.MustParsePrefix("127.0.0.0/8"), "a loopback address (this machine)"},
	{netip.MustParsePrefix("0.0.0.0/8"), "in 0.0.0.0/8, which reaches this machine"},
	{netip.MustParsePrefix("10.0.0.0/8"), "a private address (RFC 1918)"},
	{netip.MustParsePrefix("172.16.0.0/12"), "a private address (RFC 1918)"},
	{netip.MustParsePrefix("192.168.0.0/16"), "a private address (RFC 1918)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "a carrier-grade NAT address (RFC 6598)"},
	{netip.MustParsePrefix("169.254.0.0/16"), "a link-local address (the cloud metadata service lives at 169.254.169.254)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "an IETF protocol address"},
	{netip.MustParsePrefix("192.0.2.0/24"), "a documentation address"},
	{netip.MustParsePrefix("198.51.100.0/24"), "a documentation address"},
	{netip.MustParsePrefix("203.0.113.0/24"), "a documentation address"},
	{netip.MustParsePrefix("198.18.0.0/15"), "a benchmarking address"},
	{netip.MustParsePrefix("224.0.0.0/4"), "a multicast address"},
	{netip.MustParsePrefix("240.0.0.0/4"), "a reserved or broadcast address"},
	{netip.MustParsePrefix("::1/128"), "a loopback address (this machine)"},
	{netip.MustParsePrefix("::/128"), "the unspecified address, which reaches this machine"},
	{netip.MustParsePrefix("::/96"), "an IPv4-compatible IPv6 address (deprecated)"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "a local-use NAT64 address"},
	{netip.MustParsePrefix("100::/64"), "a discard-only address"},
	{netip.MustParsePrefix("2001::/32"), "a Teredo address"},
	{netip.MustParsePrefix("2001:db8::/32"), "a documentation address"},
	{netip.MustParsePrefix("fc00::/7"), "a unique local address (private IPv6)"},
	{netip.MustParsePrefix("fe80::/10"), "a link-local address"},
	{netip.MustParsePrefix("fec0::/10"), "a site-local address (deprecated)"},
	{netip.MustParsePrefix("ff00::/8"), "a multicast address"},
}

// Embedded-IPv4 IPv6 ranges: the IPv4 address inside is what is really reached.
var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// Check returns a *RefusedError when jobs may not reach ap, and nil when they may.
func (p Policy) Check(ap netip.AddrPort) error {
	a := ap.Addr().Unmap().WithZone("")
	ap = netip.AddrPortFrom(a, ap.Port())
	if slices.Contains(p.LocalPorts, ap.Port()) {
		if local, _ := p.isLocal(a); local {
			return &RefusedError{Addr: ap, Reason: "this machine, and its port " + fmt.Sprint(ap.Port()) + " is never open to jobs (the machine's own HTTP or DevTools port)", Fixed: true}
		}
	}
	for _, n := range p.Allow {
		if n.Contains(a) {
			return nil
		}
	}
	if reason := classify(a); reason != "" {
		return &RefusedError{Addr: ap, Reason: reason}
	}
	if own, err := ownAddress(a); err != nil {
		return &RefusedError{Addr: ap, Reason: "perhaps this machine's own address (its interfaces could not be listed: " + err.Error() + ")"}
	} else if own {
		return &RefusedError{Addr: ap, Reason: "an address of this machine"}
	}
	return nil
}

// classify says why a is not public, or "" when it is.
func classify(a netip.Addr) string {
	if !a.IsValid() {
		return "not a valid address"
	}
	for _, c := range closed {
		if c.net.Contains(a) {
			return c.reason
		}
	}
	b := a.As16()
	var inner netip.Addr
	switch {
	case nat64.Contains(a):
		inner = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	case sixToFour.Contains(a):
		inner = netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
	default:
		return ""
	}
	if r := classify(inner); r != "" {
		return "an IPv6 address wrapping " + inner.String() + ", which is " + r
	}
	return ""
}

// isLocal reports whether a reaches this machine.
func (p Policy) isLocal(a netip.Addr) (bool, error) {
	if a.IsLoopback() || a.IsUnspecified() || netip.MustParsePrefix("0.0.0.0/8").Contains(a) {
		return true, nil
	}
	return ownAddress(a)
}

// ownAddress reports whether a is assigned to one of this machine's interfaces. It asks the
// kernel each time (a netlink dump, some microseconds): addresses change with DHCP and
// containers, and a job connection costs far more.
func ownAddress(a netip.Addr) (bool, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false, err
	}
	for _, ad := range addrs {
		var ip net.IP
		switch v := ad.(type) {
		case *net.IPNet:
			ip = v.IP
		case *net.IPAddr:
			ip = v.IP
		}
		if own, ok := netip.AddrFromSlice(ip); ok && own.Unmap() == a {
			return true, nil
		}
	}
	return false, nil
}

// control is the dialer hook: it sees the address a socket is about to connect to, after
// name resolution, for every attempt.
func (p Policy) control(_ context.Context, _, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &RefusedError{Target: address, Reason: "not an address the guard can check"}
	}
	return p.Check(ap)
}

// DialContext connects like net.Dialer, refusing addresses the policy closes. A refusal is
// returned as a *RefusedError naming what was dialled.
func (p Policy) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, ControlContext: p.control}
	c, err := d.DialContext(ctx, network, address)
	if re, ok := IsRefused(err); ok {
		out := *re
		out.Target = address
		return nil, &out
	}
	return c, err
}

// Transport is an HTTP transport whose every connection (redirects included) passes the
// policy. It ignores HTTP_PROXY and friends: through a proxy the check would see the proxy's
// address, not the target's.
func (p Policy) Transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.DialContext = p.DialContext
	return t
}
