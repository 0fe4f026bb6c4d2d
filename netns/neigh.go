package netns

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

// pinNeighbors adds permanent ARP entries on both ends of a new veth pair
// (host end: the peer's address and MAC; inside: the host end's). Without
// them the first packet to a fresh sandbox waits for ARP, and an ARP
// request sent while the pair is still coming up is retried only after
// the neighbor table's retrans_time, a second: a cold start's first probe
// then takes 1s instead of microseconds.
func pinNeighbors(host, peer netlink.Link, inner *netlink.Handle, slot Slot) error {
	if err := netlink.NeighSet(&netlink.Neigh{
		LinkIndex:    host.Attrs().Index,
		Family:       netlink.FAMILY_V4,
		State:        netlink.NUD_PERMANENT,
		IP:           net.IP(slot.Peer.AsSlice()),
		HardwareAddr: peer.Attrs().HardwareAddr,
	}); err != nil {
		return fmt.Errorf("neighbor %s on %s: %w", slot.Peer, host.Attrs().Name, err)
	}
	if err := inner.NeighSet(&netlink.Neigh{
		LinkIndex:    peer.Attrs().Index,
		Family:       netlink.FAMILY_V4,
		State:        netlink.NUD_PERMANENT,
		IP:           net.IP(slot.Host.AsSlice()),
		HardwareAddr: host.Attrs().HardwareAddr,
	}); err != nil {
		return fmt.Errorf("neighbor %s on %s: %w", slot.Host, PeerIfName, err)
	}
	return nil
}
