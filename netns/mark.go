package netns

import (
	"errors"
	"fmt"
	"strings"
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
//
// A TCP socket also gets TCP_LINGER2 of finLinger: when the gateway
// closes such a connection first (an idle keep-alive connection, a
// shutdown), its socket waits for the sandbox's FIN as a full socket
// for a minute, where the kernel would otherwise soon turn it into a
// time-wait socket. The firewall recognises a sandbox's packets of the
// gateway's connections by their socket's mark, which a time-wait socket
// does not have (nftables' socket expression sees only full sockets): the
// sandbox's FIN would be dropped, its socket would resend it for a
// minute or two, and it would keep the sandbox's namespace alive after
// its destruction (2,000 envs took 35 s to shut down instead of 1 s).
func MarkSocket(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(DialMark))
		if serr == nil && strings.HasPrefix(network, "tcp") {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_LINGER2, finLinger)
		}
	})
	if err == nil && serr != nil && !errors.Is(serr, unix.EPERM) {
		err = fmt.Errorf("netns: mark socket: %w", serr)
	}
	return err
}

// finLinger is TCP_LINGER2 of the gateway's sockets into sandboxes, in
// seconds: the kernel's most. An orphaned socket in FIN-WAIT-2 stays a
// full socket for the part of it above the time-wait length (60 s).
const finLinger = 120
