package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// DialContext connects to addr (TCP, an IP address and port) with d from
// inside the sandbox's network namespace: the socket is made on a thread
// switched into it (the one setns per connection, at dial time, and only
// for the socket(2) call: the connect waits in the runtime's poller like
// any other, on no locked thread); the connection then works from any
// thread. Its packets stay in the sandbox's namespace, on its loopback:
// they cross no veth and none of the host namespace's netfilter hooks,
// where connection tracking and NAT run for every packet once the
// firewall's table is there. The namespace is opened by its path, so a
// sandbox destroyed meanwhile fails the dial rather than reaching
// another. d's Timeout, Deadline, Control and KeepAlive apply; its other
// fields (LocalAddr, dual-stack fallbacks, resolver) do not.
func (s *Sandbox) DialContext(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
	return DialIn(ctx, s.Path(), d, network, addr)
}

// DialIn is Sandbox.DialContext for the network namespace at path (a bind
// mount such as /run/netns/NAME, or /proc/PID/ns/net), named in errors
// by the path's last element.
func DialIn(ctx context.Context, path string, d *net.Dialer, network, addr string) (net.Conn, error) {
	name := filepath.Base(path)
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || (network != "tcp" && network != "tcp4" && network != "tcp6") {
		return nil, fmt.Errorf("netns: dial %s %s in %s: want TCP to an IP address and port", network, addr, name)
	}
	family, sa := unix.AF_INET, unix.Sockaddr(&unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	if err := ctx.Err(); err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: net.TCPAddrFromAddrPort(ap), Err: err}
	}
	h, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("netns: dial in %s: %w", name, err)
	}
	defer h.Close()
	fd := -1
	err = onThreadIn(h, func() error {
		var err error
		fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netns: dial in %s: socket: %w", name, err)
	}
	return connectFD(ctx, d, fd, sa, network, addr)
}

// aLongTimeAgo is a deadline in the past: it wakes a wait at once.
var aLongTimeAgo = time.Unix(1, 0)

// connectFD connects fd, a non-blocking TCP socket, to sa, as net.Dialer
// would, and returns it as a net.Conn. It owns fd.
func connectFD(ctx context.Context, d *net.Dialer, fd int, sa unix.Sockaddr, network, addr string) (net.Conn, error) {
	// A non-blocking descriptor: os.File registers it with the runtime's
	// poller, so the wait for the connect parks this goroutine only.
	f := os.NewFile(uintptr(fd), "dial "+addr)
	defer f.Close() // net.FileConn keeps a duplicate
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: network, Addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr)), Err: err}
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, opErr(err)
	}
	if d.Control != nil {
		if err := d.Control(network, addr, rc); err != nil {
			return nil, opErr(err)
		}
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) { cerr = unix.Connect(int(fd), sa) }); err != nil {
		return nil, opErr(err)
	}
	switch {
	case cerr == nil:
	case errors.Is(cerr, unix.EINPROGRESS), errors.Is(cerr, unix.EALREADY), errors.Is(cerr, unix.EINTR):
		deadline := d.Deadline
		if d.Timeout > 0 {
			if t := time.Now().Add(d.Timeout); deadline.IsZero() || t.Before(deadline) {
				deadline = t
			}
		}
		if t, ok := ctx.Deadline(); ok && (deadline.IsZero() || t.Before(deadline)) {
			deadline = t
		}
		if !deadline.IsZero() {
			f.SetWriteDeadline(deadline)
		}
		stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(aLongTimeAgo) })
		defer stop()
		var soErr error
		werr := rc.Write(func(fd uintptr) bool {
			v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
			if err != nil {
				soErr = err
				return true
			}
			switch e := unix.Errno(v); e {
			case 0:
				// No error yet: connected, or still connecting (the
				// first call comes before any wait).
				_, err := unix.Getpeername(int(fd))
				if errors.Is(err, unix.ENOTCONN) {
					return false
				}
				soErr = err
				return true
			case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
				return false
			default:
				soErr = os.NewSyscallError("connect", e)
				return true
			}
		})
		if werr != nil {
			if ctx.Err() != nil {
				werr = ctx.Err()
			}
			return nil, opErr(werr)
		}
		if soErr != nil {
			return nil, opErr(soErr)
		}
	default:
		return nil, opErr(os.NewSyscallError("connect", cerr))
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, opErr(err)
	}
	if tc, ok := c.(*net.TCPConn); ok && d.KeepAlive >= 0 {
		period := d.KeepAlive
		if period == 0 {
			period = 15 * time.Second // net.Dialer's default
		}
		tc.SetKeepAlive(true)
		tc.SetKeepAlivePeriod(period)
	}
	return c, nil
}
