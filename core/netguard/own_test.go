package netguard

import (
	"net"
	"net/netip"
	"testing"
)

// The machine's own interface addresses are closed even when public (this test uses
// whatever the host has: its classification is not what is tested, ownAddress is).
func TestOwnAddressesAreKnown(t *testing.T) {
	addrs, err := net.InterfaceAddrs()
	if err != nil || len(addrs) == 0 {
		t.Fatalf("no interface addresses: %v", err)
	}
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.(*net.IPNet).IP)
		if own, err := ownAddress(ip.Unmap()); err != nil || !own {
			t.Errorf("%s is not seen as this machine's: %v", ip, err)
		}
	}
	if own, _ := ownAddress(netip.MustParseAddr("8.8.8.8")); own {
		t.Error("8.8.8.8 is seen as this machine's")
	}
}
