package netns_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest/wait"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// tracked reports whether the host's connection tracking has an entry
// whose original direction is TCP from src to dst.
func tracked(t *testing.T, src, dst netip.AddrPort) bool {
	t.Helper()
	flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatalf("conntrack dump: %v", err)
	}
	for _, f := range flows {
		o := f.Forward
		if o.Protocol == unix.IPPROTO_TCP && o.SrcPort == src.Port() && o.DstPort == dst.Port() &&
			o.SrcIP.Equal(src.Addr().AsSlice()) && o.DstIP.Equal(dst.Addr().AsSlice()) {
			return true
		}
	}
	return false
}

// greet connects with d to addr and reads the greeting; it returns the
// connection's two ends.
func greet(t *testing.T, d *net.Dialer, addr string) (local, remote netip.AddrPort, err error) {
	t.Helper()
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		return local, remote, err
	}
	defer c.Close()
	if _, err := readGreeting(c); err != nil {
		return local, remote, err
	}
	return c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort(), nil
}

// stateFirewall installs a host firewall of someone else's in the style
// of firewalld, for TCP port port only (the machine is shared): its
// input chain, with policy drop for that port, accepts established and
// related packets, and new or untracked ones as a service rule.
func stateFirewall(t *testing.T, prefix string, port uint16) {
	t.Helper()
	cc := &nftables.Conn{}
	tb := cc.AddTable(&nftables.Table{Name: "hostfw-" + prefix, Family: nftables.TableFamilyINet})
	in := cc.AddChain(&nftables.Chain{Name: "input", Table: tb, Hooknum: nftables.ChainHookInput,
		Priority: nftables.ChainPriorityFilter, Type: nftables.ChainTypeFilter})
	isPort := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
	state := func(bits uint32, v expr.VerdictKind) []expr.Any {
		return append(append([]expr.Any{}, isPort...),
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
			&expr.Verdict{Kind: v})
	}
	cc.AddRule(&nftables.Rule{Table: tb, Chain: in, Exprs: state(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED, expr.VerdictAccept)})
	cc.AddRule(&nftables.Rule{Table: tb, Chain: in, Exprs: state(expr.CtStateBitNEW|expr.CtStateBitUNTRACKED, expr.VerdictAccept)})
	cc.AddRule(&nftables.Rule{Table: tb, Chain: in, Exprs: append(append([]expr.Any{}, isPort...), &expr.Verdict{Kind: expr.VerdictDrop})})
	if err := cc.Flush(); err != nil {
		t.Fatalf("host firewall table: %v", err)
	}
	t.Cleanup(func() {
		cc.DelTable(tb)
		cc.Flush()
	})
}

// TestFirewallListenersUntracked: the traffic of a listener port set
// with SetListenerPorts skips connection tracking (and passes a
// firewalld-style host firewall), while what the policy needs tracked
// stays tracked: a sandbox's connections to that port on the host, the
// host's connections to a sandbox from that port (which the output
// chain must still see as new: an unmarked one is refused), and
// forwarded traffic to that port (masqueraded).
func TestFirewallListenersUntracked(t *testing.T) {
	keepIPForward(t)
	m := newManager(t)
	port := hostListener(t, "0.0.0.0:0")
	lport := uint16(port)
	stateFirewall(t, m.Prefix(), lport)
	inet := internet(t, port)
	fw := openFirewall(t, m, netns.Policy{Name: "web", Egress: netns.EgressInternet, HostPorts: []uint16{lport}})
	a := create(t, m, "a")
	attach(t, fw, a, "web")
	listenIn(t, a, 3000, "a")

	local := &net.Dialer{Timeout: succeedBy}
	loop := "127.0.0.1:" + strconv.Itoa(port)
	src, dst, err := greet(t, local, loop)
	if err != nil {
		t.Fatalf("local client to the listener, tracked: %v", err)
	}
	if !tracked(t, src, dst) {
		t.Fatalf("%v -> %v untracked before SetListenerPorts: the check below cannot fail", src, dst)
	}

	const other = 1 // a port in the set that nothing listens on
	if err := fw.SetListenerPorts([]uint16{lport, lport, other}); err != nil {
		t.Fatal(err)
	}
	if src, dst, err = greet(t, local, loop); err != nil {
		t.Errorf("local client to the listener, untracked: %v", err)
	} else if tracked(t, src, dst) {
		t.Errorf("local client %v -> listener %v tracked", src, dst)
	}
	// A sandbox's connection to it (a host port of its policy).
	err = a.Do(func() error {
		src, dst, err = greet(t, &net.Dialer{Timeout: succeedBy}, hostPort(a.Slot.Host, port))
		return err
	})
	if err != nil {
		t.Errorf("A to its host port %d: %v", port, err)
	} else if !tracked(t, src, dst) {
		t.Errorf("A's connection %v -> %v to a listener port untracked", src, dst)
	}
	// Forwarded to the port elsewhere: tracked, so masqueraded.
	if err := dialFrom(a, hostPort(inet, port), succeedBy); err != nil {
		t.Errorf("A to the internet on port %d: %v", port, err)
	}
	// From a port of the set, to a sandbox, unmarked: still refused.
	fromPort := &net.Dialer{Timeout: failFast, LocalAddr: &net.TCPAddr{IP: a.Slot.Host.AsSlice(), Port: other}}
	// The output chain refuses it at once; a timeout would mean its SYN
	// went out untracked, past that chain, to be dropped only on the
	// way back.
	if c, err := fromPort.Dial("tcp4", hostPort(a.Addr(), 3000)); err == nil {
		c.Close()
		t.Errorf("an unmarked local process reached A from listener port %d", other)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("an unmarked dial to A from listener port %d was not refused by the output chain: %v", other, err)
	}

	// Replaced, not added to: the port is tracked again.
	if err := fw.SetListenerPorts(nil); err != nil {
		t.Fatal(err)
	}
	if src, dst, err = greet(t, local, loop); err != nil {
		t.Errorf("local client to the listener, tracked again: %v", err)
	} else if !tracked(t, src, dst) {
		t.Errorf("%v -> %v untracked after SetListenerPorts(nil)", src, dst)
	}

	// A successor's table keeps the ports of its predecessor's.
	if err := fw.SetListenerPorts([]uint16{lport}); err != nil {
		t.Fatal(err)
	}
	next, err := netns.OpenFirewall(netns.FirewallConfig{Prefix: m.Prefix(),
		Policies: []netns.Policy{{Name: "web", Egress: netns.EgressInternet, HostPorts: []uint16{lport}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { next.Close() })
	if src, dst, err = greet(t, local, loop); err != nil {
		t.Errorf("local client to the listener after a takeover: %v", err)
	} else if tracked(t, src, dst) {
		t.Errorf("%v -> %v tracked after a takeover", src, dst)
	}
}

// inputFirewall installs a host firewall of someone else's in the style
// of firewalld's and ufw's input chains, for sb's host link only (the
// machine is shared): what arrives there is accepted in conntrack state
// established or related and dropped otherwise, untracked included.
func inputFirewall(t *testing.T, prefix string, sb *netns.Sandbox) {
	t.Helper()
	cc := &nftables.Conn{}
	tb := cc.AddTable(&nftables.Table{Name: "hostin-" + prefix, Family: nftables.TableFamilyINet})
	in := cc.AddChain(&nftables.Chain{Name: "input", Table: tb, Hooknum: nftables.ChainHookInput,
		Priority: nftables.ChainPriorityFilter, Type: nftables.ChainTypeFilter})
	link := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: append([]byte(sb.HostIf), 0)},
	}
	cc.AddRule(&nftables.Rule{Table: tb, Chain: in, Exprs: append(append([]expr.Any{}, link...),
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		&expr.Verdict{Kind: expr.VerdictAccept})})
	cc.AddRule(&nftables.Rule{Table: tb, Chain: in, Exprs: append(append([]expr.Any{}, link...), &expr.Verdict{Kind: expr.VerdictDrop})})
	if err := cc.Flush(); err != nil {
		t.Fatalf("host input firewall table: %v", err)
	}
	t.Cleanup(func() {
		cc.DelTable(tb)
		cc.Flush()
	})
}

// TestFirewallGatewayConnections: with no other table filtering the
// host's input, the gateway's connections to a sandbox skip connection
// tracking (both ways: its packets by their mark, the sandbox's by the
// socket they belong to) and still work; a firewall opened while another
// table's input chain accepts the sandbox's packets by conntrack state
// only keeps them tracked, so the gateway still reaches the sandbox
// through that chain (untracked, its SYN-ACK would be dropped there).
func TestFirewallGatewayConnections(t *testing.T) {
	keepIPForward(t)
	m := newManager(t)
	policy := netns.Policy{Name: "web", Egress: netns.EgressInternet}
	fw := openFirewall(t, m, policy)
	a := create(t, m, "a")
	attach(t, fw, a, "web")
	listenIn(t, a, 3000, "a")
	gw := &net.Dialer{Timeout: succeedBy, Control: netns.MarkSocket}
	addr := hostPort(a.Addr(), 3000)

	if netns.HostFirewall() {
		t.Logf("another table filters this host's input: the firewall opened tracked, the untracked case is not checked")
	} else {
		src, dst, err := greet(t, gw, addr)
		if err != nil {
			t.Fatalf("gateway to A, untracked: %v", err)
		}
		if tracked(t, src, dst) {
			t.Errorf("the gateway's connection %v -> %v is tracked with no host firewall", src, dst)
		}
	}

	inputFirewall(t, m.Prefix(), a)
	if !netns.HostFirewall() {
		t.Fatal("a table with an input chain is not taken for a host firewall")
	}
	next, err := netns.OpenFirewall(netns.FirewallConfig{Prefix: m.Prefix(), Policies: []netns.Policy{policy}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { next.Close() })
	src, dst, err := greet(t, gw, addr)
	if err != nil {
		t.Fatalf("gateway to A through a stateful host firewall: %v", err)
	}
	if !tracked(t, src, dst) {
		t.Errorf("the gateway's connection %v -> %v is untracked next to a stateful host firewall", src, dst)
	}
	// A local process without the gateway's mark is still refused.
	if err := dialHost(addr, false, failFast); err == nil {
		t.Errorf("an unmarked local process reached A")
	}
}

// TestFirewallHostPortsTracked: a sandbox's connections to the host
// ports of its policy stay tracked (the policy accepts them by state)
// while its other TCP to its host end skips tracking, whether the ports
// are few (compared one by one) or many (looked up in a set).
func TestFirewallHostPortsTracked(t *testing.T) {
	if netns.HostFirewall() {
		t.Skip("another table filters this host's input: the firewall keeps every connection of sandboxes tracked")
	}
	for _, n := range []int{1, 12} {
		t.Run(strconv.Itoa(n)+" ports", func(t *testing.T) {
			m := newManager(t)
			open := hostListener(t, "0.0.0.0:0")
			ports := []uint16{uint16(open)}
			for i := 1; i < n; i++ {
				ports = append(ports, uint16(i)) // nothing listens there
			}
			fw := openFirewall(t, m, netns.Policy{Name: "db", HostPorts: ports})
			a := create(t, m, "a")
			attach(t, fw, a, "db")
			var src, dst netip.AddrPort
			err := a.Do(func() (err error) {
				src, dst, err = greet(t, &net.Dialer{Timeout: succeedBy}, hostPort(a.Slot.Host, open))
				return err
			})
			if err != nil {
				t.Fatalf("A to its host port %d: %v", open, err)
			}
			if !tracked(t, src, dst) {
				t.Errorf("A's connection %v -> %v to its host port is untracked", src, dst)
			}
		})
	}
}

// TestFirewallGatewayClosesFirst: when the gateway closes a connection to
// a sandbox first (an idle keep-alive connection, a shutdown), the FIN
// the sandbox then sends still reaches the gateway's socket, so the
// sandbox's socket closes instead of resending its FIN into a drop (which
// kept a destroyed sandbox's namespace alive for minutes).
func TestFirewallGatewayClosesFirst(t *testing.T) {
	keepIPForward(t)
	m := newManager(t)
	fw := openFirewall(t, m, netns.Policy{Name: "web", Egress: netns.EgressInternet})
	a := create(t, m, "a")
	attach(t, fw, a, "web")
	const port = 3001
	var ln net.Listener
	if err := a.Do(func() (err error) {
		ln, err = net.Listen("tcp4", hostPort(a.Addr(), port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				// Close on EOF, as an HTTP server does, but only once the
				// gateway's socket waits in FIN-WAIT-2 (05), as when the
				// server is slower to notice than the kernel to ACK.
				io.Copy(io.Discard, c)
				gw := c.RemoteAddr().(*net.TCPAddr).Port
				wait.Until(succeedBy, func() bool { return slices.Contains(hostSockets(t, gw), "05") })
				c.Close()
			}()
		}
	}()
	for i := range 3 {
		c, err := (&net.Dialer{Timeout: succeedBy, Control: netns.MarkSocket}).Dial("tcp4", hostPort(a.Addr(), port))
		if err != nil {
			t.Fatalf("gateway to A: %v", err)
		}
		if _, err := c.Write([]byte("request " + strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	// A's sockets of those connections are gone once their FINs are
	// acknowledged (the side that closes second has no TIME-WAIT);
	// dropped, they would stay in LAST-ACK.
	var left []string
	if !wait.Until(succeedBy, func() bool {
		left = sandboxSockets(t, a, port)
		return len(left) == 0
	}) {
		t.Fatalf("A's sockets of connections the gateway closed first are stuck in states %v", left)
	}
}

// sandboxSockets returns the states (hex, as /proc/net/tcp has them) of
// sb's IPv4 TCP sockets on local port port, other than listeners.
func sandboxSockets(t *testing.T, sb *netns.Sandbox, port int) []string {
	t.Helper()
	var b []byte
	if err := sb.Do(func() (err error) {
		b, err = os.ReadFile("/proc/thread-self/net/tcp")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return socketStates(b, port)
}

// hostSockets is sandboxSockets for the host's network namespace.
func hostSockets(t *testing.T, port int) []string {
	b, err := os.ReadFile("/proc/self/net/tcp")
	if err != nil {
		t.Error(err)
	}
	return socketStates(b, port)
}

// socketStates returns the states in /proc/net/tcp's text b of the
// sockets on local port port, other than listeners.
func socketStates(b []byte, port int) []string {
	var states []string
	suffix := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1], suffix) && f[3] != "0A" { // 0A: LISTEN
			states = append(states, f[3])
		}
	}
	return states
}
