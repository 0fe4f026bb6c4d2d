package netns

import (
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// configureSandbox closes IPv6 on both ends of sb's veth (the firewall
// drops it too; this keeps link-local addresses and router solicitations
// from appearing at all) and gives sb a default route via its host end
// when it has egress, or takes it away.
func configureSandbox(sb *Sandbox, egress bool) error {
	if err := disableIPv6(sb.HostIf); err != nil {
		return err
	}
	err := sb.Do(func() error {
		// /proc/sys/net is the namespace of the thread that opens it.
		for _, dev := range []string{"all", "default", PeerIfName} {
			if err := disableIPv6(dev); err != nil {
				return err
			}
		}
		link, err := netlink.LinkByName(PeerIfName)
		if err != nil {
			return err
		}
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: sb.Slot.Host.AsSlice()}
		if egress {
			return netlink.RouteReplace(route)
		}
		if err := netlink.RouteDel(route); err != nil && !errors.Is(err, unix.ESRCH) {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("netns: %s: policy: %w", sb.Name, err)
	}
	return nil
}

// disableIPv6 turns IPv6 off on interface dev of the calling thread's
// namespace. A kernel without IPv6 has nothing to turn off.
func disableIPv6(dev string) error {
	err := os.WriteFile("/proc/sys/net/ipv6/conf/"+dev+"/disable_ipv6", []byte("1\n"), 0o644)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("disable IPv6 on %s: %w", dev, err)
	}
	return nil
}
