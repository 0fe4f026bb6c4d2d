package netns_test

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/netns"
	"golang.org/x/sys/unix"
)

// TCP flags of crafted segments.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// tcpPacket is an IPv4 packet holding one TCP segment with no options
// and no payload (the kernel fills in the IP header's checksum, length
// and ID on a raw socket).
func tcpPacket(src, dst netip.AddrPort, seq, ack uint32, flags byte) []byte {
	p := make([]byte, 40)
	p[0] = 0x45
	p[8] = 64
	p[9] = unix.IPPROTO_TCP
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	t := p[20:]
	binary.BigEndian.PutUint16(t[0:], src.Port())
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = 5 << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], 65535)
	// Checksum over the pseudo-header and the segment.
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	add(s[:])
	add(d[:])
	sum += unix.IPPROTO_TCP + uint32(len(t))
	add(t)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(t[16:], ^uint16(sum))
	return p
}

// rawTCP is a pair of raw sockets inside one sandbox: one sends crafted
// IPv4 packets (with any source address), the other sees a copy of every
// TCP segment that arrives in the sandbox.
type rawTCP struct {
	send, recv int
}

func openRawTCP(t *testing.T, sb *netns.Sandbox) *rawTCP {
	t.Helper()
	r := &rawTCP{send: -1, recv: -1}
	err := sb.Do(func() (err error) {
		if r.send, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
			return err
		}
		r.recv, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		return err
	})
	t.Cleanup(func() {
		unix.Close(r.send)
		unix.Close(r.recv)
	})
	if err != nil {
		t.Fatalf("raw sockets in %s: %v", sb.Name, err)
	}
	return r
}

func (r *rawTCP) sendTCP(t *testing.T, src, dst netip.AddrPort, seq, ack uint32, flags byte) {
	t.Helper()
	if err := unix.Sendto(r.send, tcpPacket(src, dst, seq, ack, flags), 0, &unix.SockaddrInet4{Addr: dst.Addr().As4()}); err != nil {
		t.Fatalf("send crafted segment %s -> %s: %v", src, dst, err)
	}
}

// reply waits up to timeout for a segment from `from` to `to` and
// returns its flags; ok is false when none came.
func (r *rawTCP) reply(t *testing.T, from, to netip.AddrPort, timeout time.Duration) (flags byte, ok bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return 0, false
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(r.recv, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			t.Fatal(err)
		}
		n, _, err := unix.Recvfrom(r.recv, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("read raw socket: %v", err)
		}
		p := buf[:n]
		if n < 20 {
			continue
		}
		ihl := int(p[0]&0x0f) * 4
		if n < ihl+14 {
			continue
		}
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte(p[12:16])), binary.BigEndian.Uint16(p[ihl:]))
		dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte(p[16:20])), binary.BigEndian.Uint16(p[ihl+2:]))
		if src == from && dst == to {
			return p[ihl+13], true
		}
	}
}

// holdIn listens inside sb on port and keeps every connection open,
// silent, until the peer closes it or the test ends.
func holdIn(t *testing.T, sb *netns.Sandbox, port int) {
	t.Helper()
	var ln net.Listener
	err := sb.Do(func() (err error) {
		ln, err = net.Listen("tcp4", ":"+strconv.Itoa(port))
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", sb.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var b [1]byte
				c.Read(b[:])
			}()
		}
	}()
}

// gatewayConn dials addr from the host as the gateway does (DialMark)
// and returns the connection with the next sequence number it expects
// from its peer (read through TCP_REPAIR), which a reset must carry.
func gatewayConn(t *testing.T, addr netip.AddrPort) (*net.TCPConn, netip.AddrPort, uint32) {
	t.Helper()
	d := net.Dialer{Timeout: succeedBy, Control: netns.MarkSocket}
	c, err := d.Dial("tcp4", addr.String())
	if err != nil {
		t.Fatalf("gateway's dial to %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	tc := c.(*net.TCPConn)
	raw, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	const recvQueue = 1 // TCP_RECV_QUEUE
	var rcvNxt int
	var serr error
	err = raw.Control(func(fd uintptr) {
		s := int(fd)
		if serr = unix.SetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1); serr != nil {
			return
		}
		defer unix.SetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF)
		if serr = unix.SetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, recvQueue); serr != nil {
			return
		}
		rcvNxt, serr = unix.GetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		t.Fatalf("read the receive sequence of the gateway's connection: %v", err)
	}
	return tc, tc.LocalAddr().(*net.TCPAddr).AddrPort(), uint32(rcvNxt)
}

// wasReset reports whether c was reset: a read fails with ECONNRESET
// within timeout (the peer sends nothing otherwise).
func wasReset(t *testing.T, c *net.TCPConn, timeout time.Duration) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	var b [1]byte
	_, err := c.Read(b[:])
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return true
	case errors.Is(err, os.ErrDeadlineExceeded):
		return false
	default:
		t.Fatalf("read from the gateway's connection: %v (want a reset or a timeout)", err)
		return false
	}
}

// TestFirewallCraftedPackets: what an env crafts with a raw socket (as
// root inside its namespace, or with CAP_NET_RAW) gets no further than a
// normal connect: a bare SYN or a bare ACK to a host service, and an ACK
// to a port the gateway connects from, get no answer; and a reset that
// claims to come from env B, aimed at the gateway's connection to B with
// the exact sequence number, is dropped (connection tracking alone would
// take it for B's: it matches addresses and ports, not the link). Without
// the firewall the same packets get answers, so the probes can see one.
func TestFirewallCraftedPackets(t *testing.T) {
	keepIPForward(t)
	m := newManager(t)
	foreign := foreignTable(t, m.Prefix())
	fw := openFirewall(t, m, netns.Policy{Name: "web", Egress: netns.EgressInternet})
	a, b := create(t, m, "a"), create(t, m, "b")
	attach(t, fw, a, "web")
	attach(t, fw, b, "web")
	holdIn(t, a, 3000)
	holdIn(t, b, 3000)
	wild := uint16(hostListener(t, "0.0.0.0:0"))
	rawA, rawB := openRawTCP(t, a), openRawTCP(t, b)

	_, gwA, _ := gatewayConn(t, netip.AddrPortFrom(a.Addr(), 3000))
	connB, gwB, seqB := gatewayConn(t, netip.AddrPortFrom(b.Addr(), 3000))
	fromA := netip.AddrPortFrom(a.Addr(), 40001)
	probes := []struct {
		what  string
		dst   netip.AddrPort
		flags byte
	}{
		{"bare SYN to a host service on 0.0.0.0", netip.AddrPortFrom(a.Slot.Host, wild), tcpSYN},
		{"bare ACK to a host service on 0.0.0.0", netip.AddrPortFrom(a.Slot.Host, wild), tcpACK},
		{"ACK to the port the gateway connects to A from", gwA, tcpACK},
		{"ACK to the port the gateway connects to B from", gwB, tcpACK},
	}
	probe := func(firewall bool) {
		for _, p := range probes {
			rawA.sendTCP(t, fromA, p.dst, 1000, 1000, p.flags)
			timeout := failFast
			if !firewall {
				timeout = succeedBy
			}
			flags, ok := rawA.reply(t, p.dst, fromA, timeout)
			if firewall && ok {
				t.Errorf("%s (%s): the host answered with flags %#x", p.what, p.dst, flags)
			}
			if !firewall && !ok {
				t.Errorf("without the firewall, %s (%s) got no answer: the probe sees nothing", p.what, p.dst)
			}
		}
	}
	probe(true)

	// A reset with B's address and the exact sequence number the
	// gateway's connection to B expects, sent from A: dropped, as A's
	// packets may carry only A's address. The same reset from B (whose
	// connection it is) resets it, so the packet is right.
	spoofed := netip.AddrPortFrom(b.Addr(), 3000)
	rawA.sendTCP(t, spoofed, gwB, seqB, 0, tcpRST)
	if wasReset(t, connB, failFast) {
		t.Errorf("env A reset the gateway's connection to env B with B's source address")
	}
	rawB.sendTCP(t, spoofed, gwB, seqB, 0, tcpRST)
	if !wasReset(t, connB, succeedBy) {
		t.Errorf("the reset from B itself did not reset the gateway's connection to B: the crafted packet is wrong")
	}
	foreignIntact(t, foreign)

	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	probe(false)
}
