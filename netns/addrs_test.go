package netns_test

import (
	"net"
	"testing"

	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
	"github.com/vishvananda/netlink"
)

// TestCreateSkipsSlotsOthersUse: a host interface carrying an address in
// a slot's /30, or a subnet holding a slot, keeps Create off that slot.
func TestCreateSkipsSlotsOthersUse(t *testing.T) {
	prefix := netnstest.Prefix(t)
	pool := netnstest.Pool(0)
	m, err := netns.New(netns.Config{Prefix: prefix, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	// Someone else's: slot 0's peer address, and a /29 over slots 2 and 3.
	dummy := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: prefix + "-x0"}, PeerName: prefix + "-x1"}
	if err := netlink.LinkAdd(dummy); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netlink.LinkDel(dummy) })
	for _, a := range []string{"10.214.0.2/32", "10.214.0.9/29"} {
		ip, ipn, _ := net.ParseCIDR(a)
		ipn.IP = ip
		if err := netlink.AddrAdd(dummy, &netlink.Addr{IPNet: ipn}); err != nil {
			t.Fatal(err)
		}
	}
	if p := m.Pool().Prefix(); p != pool {
		t.Fatalf("Pool().Prefix() = %v, want %v", p, pool)
	}
	var got []int
	for _, id := range []string{"a", "b"} {
		got = append(got, create(t, m, id).Slot.Index)
	}
	if got[0] != 1 || got[1] != 4 {
		t.Fatalf("slots %v, want [1 4] (0 and 2-3 are taken)", got)
	}
}
