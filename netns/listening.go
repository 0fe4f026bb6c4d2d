package netns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Whether something listens, without connecting. A readiness probe that
// connects to a port nobody listens on yet costs a socket, a SYN through
// the veth and the firewall, a reset back and a dial goroutine: about
// 0.1 ms of CPU, ten of them or more while a dev server boots. The
// kernel's socket diagnostics (sock_diag, as ss uses) answer the same
// question, "would a SYN to addr:port find a listener", with the lookup a
// SYN makes (inet_lookup), and no packet: a few microseconds.

// ErrNoSockDiag means this kernel does not answer sock_diag lookups for
// TCP (no tcp_diag): probe by connecting instead.
var ErrNoSockDiag = errors.New("netns: no TCP socket diagnostics (tcp_diag)")

// ListenProbe asks one network namespace whether a TCP socket listens on
// an address and port. Not safe for concurrent use.
type ListenProbe struct {
	fd int // NETLINK_SOCK_DIAG socket in the namespace
}

// ListenProbe returns a probe of the sandbox's namespace; the caller
// closes it. ErrNoSockDiag: the kernel cannot answer.
func (s *Sandbox) ListenProbe() (*ListenProbe, error) {
	if err := sockDiagWorks(); err != nil {
		return nil, err
	}
	if !s.handle.IsOpen() {
		return nil, fmt.Errorf("netns: %s: sandbox destroyed", s.Name)
	}
	fd := -1
	err := onThreadIn(s.handle, func() error {
		var err error
		fd, err = sockDiagSocket()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netns: %s: %w", s.Name, err)
	}
	return &ListenProbe{fd: fd}, nil
}

func sockDiagSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return -1, fmt.Errorf("sock_diag socket: %w", err)
	}
	// A lost answer must not hang the caller.
	tv := unix.Timeval{Usec: 100_000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// Close releases the probe.
func (p *ListenProbe) Close() error {
	if p == nil || p.fd < 0 {
		return nil
	}
	err := unix.Close(p.fd)
	p.fd = -1
	return err
}

// Listening reports whether a TCP connection to ap in the probe's
// namespace would find a listening socket (bound to ap's address or to
// the wildcard, IPv4 or dual-stack IPv6).
func (p *ListenProbe) Listening(ap netip.AddrPort) (bool, error) {
	return listening(p.fd, ap)
}

// The request: a netlink header and an inet_diag_req_v2 (linux/inet_diag.h).
const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	inetDiagReqLen   = 56 // sizeof(struct inet_diag_req_v2)
	tcpListen        = 10 // TCP_LISTEN
)

// listening asks the sock_diag socket fd for the socket a SYN to ap would
// reach: an exact lookup (no dump), which answers with that socket or
// ENOENT.
func listening(fd int, ap netip.AddrPort) (bool, error) {
	if !ap.Addr().Is4() {
		return false, fmt.Errorf("netns: listen probe: %s is not IPv4", ap)
	}
	var req [unix.NLMSG_HDRLEN + inetDiagReqLen]byte
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], sockDiagByFamily)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], 1) // seq
	r := req[unix.NLMSG_HDRLEN:]
	r[0] = unix.AF_INET
	r[1] = unix.IPPROTO_TCP
	ne.PutUint32(r[4:], 1<<tcpListen)
	// inet_diag_sockid: sport, dport (big endian), src[4], dst[4], if,
	// cookie[2]. "src" is the local end: the listener's address and port.
	id := r[8:]
	binary.BigEndian.PutUint16(id[0:], ap.Port())
	a := ap.Addr().As4()
	copy(id[4:8], a[:])
	ne.PutUint32(id[40:], ^uint32(0)) // INET_DIAG_NOCOOKIE
	ne.PutUint32(id[44:], ^uint32(0))
	if err := unix.Sendto(fd, req[:], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return false, fmt.Errorf("netns: listen probe: %w", err)
	}
	var buf [1024]byte
	for {
		n, _, err := unix.Recvfrom(fd, buf[:], 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("netns: listen probe: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return false, fmt.Errorf("netns: listen probe: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != 1 {
				continue // a stale answer
			}
			switch m.Header.Type {
			case sockDiagByFamily:
				// inet_diag_msg: family, state, ...
				return len(m.Data) >= 2 && m.Data[1] == tcpListen, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return false, errors.New("netns: listen probe: short error")
				}
				if errno := unix.Errno(-int32(ne.Uint32(m.Data))); errno != unix.ENOENT {
					return false, fmt.Errorf("netns: listen probe: %w", errno)
				}
				return false, nil
			}
		}
	}
}

// sockDiagWorks checks once, in the process's own namespace, that the
// kernel finds a listener it is shown and answers ENOENT for a port
// nobody listens on: tcp_diag answers ENOENT for everything when it is
// missing, which would make every dev server look silent.
var sockDiagWorks = sync.OnceValue(func() error {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoSockDiag, err)
	}
	defer ln.Close()
	fd, err := sockDiagSocket()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoSockDiag, err)
	}
	defer unix.Close(fd)
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if ok, err := listening(fd, ap); err != nil || !ok {
		return fmt.Errorf("%w: a listener on %s not found (%v)", ErrNoSockDiag, ap, err)
	}
	return nil
})
