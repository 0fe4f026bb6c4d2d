package netns

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// Packet marks the firewall uses (policy.go), compared under markMask
// only, so that bits other software sets (kube-proxy 0x4000/0x8000,
// Calico and Tailscale in the upper half, Cilium 0x0f00) neither collide
// with them nor are cleared by them.
const (
	// DialMark is the mark of the gateway's own connections into
	// sandboxes: the firewall's output chain rejects every other new
	// connection from the host to a sandbox's address.
	DialMark uint32 = 0xe7
	// fwdMark tags forwarded packets a firewall has let through, for
	// the guard chains of any envgate instance that turned IP forwarding
	// on (see Firewall).
	fwdMark  uint32 = 0xe8
	markMask uint32 = 0xff
)

// MarkSocket sets DialMark on a socket before it connects. Use it as the
// Control function of every net.Dialer that dials into sandboxes. It
// needs CAP_NET_ADMIN; without it (tests as an ordinary user, where no
// firewall can be on either) the socket is left unmarked.
func MarkSocket(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(DialMark))
	})
	if err == nil && serr != nil && !errors.Is(serr, unix.EPERM) {
		err = fmt.Errorf("netns: mark socket: %w", serr)
	}
	return err
}
