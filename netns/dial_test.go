package netns_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
)

// TestSandboxDialContext: a connection DialContext makes belongs to the
// sandbox's namespace: past a firewall that refuses the host's unmarked
// connections to the sandbox, an unmarked one reaches the sandbox's
// server, from the sandbox's own address (not its host end: it never
// crossed the veth), and leaves no connection tracking entry in the
// host's namespace. A sandbox destroyed fails the dial.
func TestSandboxDialContext(t *testing.T) {
	m := newManager(t)
	fw := openFirewall(t, m, netns.Policy{Name: "none"})
	a := createFor(t, m, fw, "a", "none")
	listenIn(t, a, 3000, "a")
	addr := hostPort(a.Addr(), 3000)
	if err := dialHost(addr, false, failFast); err == nil {
		t.Fatal("an unmarked local connection from the host reached A: the firewall is not in the way")
	}

	d := &net.Dialer{Timeout: succeedBy}
	c, err := a.DialContext(context.Background(), d, "tcp4", addr)
	if err != nil {
		t.Fatalf("dial %s inside A: %v", addr, err)
	}
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	got, err := readGreeting(c)
	if err != nil || strings.TrimSpace(got) != "a" {
		t.Fatalf("greeting %q, %v: want a", got, err)
	}
	if local.Addr() != a.Addr() {
		t.Errorf("the connection comes from %v, not from inside A (%v)", local, a.Addr())
	}
	if tracked(t, local, remote) {
		t.Errorf("the connection %v -> %v is tracked in the host's namespace", local, remote)
	}

	// Nothing listens on 3001: refused, as a dial from the host would be.
	if c, err := a.DialContext(context.Background(), d, "tcp4", hostPort(a.Addr(), 3001)); err == nil {
		c.Close()
		t.Errorf("dialed a port of A where nothing listens")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial a port of A where nothing listens: %v, want connection refused", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if c, err := a.DialContext(ctx, d, "tcp4", addr); err == nil {
		c.Close()
		t.Errorf("dialed with a context already canceled")
	}

	b := create(t, m, "b")
	listenIn(t, b, 3000, "b")
	if err := m.Destroy(b); err != nil {
		t.Fatal(err)
	}
	if c, err := b.DialContext(context.Background(), d, "tcp4", hostPort(b.Addr(), 3000)); err == nil {
		c.Close()
		t.Errorf("dialed into B after it was destroyed")
	}
}

// BenchmarkDial connects to a server in a sandbox and closes the
// connection, side by side: from the host over the veth (as the gateway
// did before it dialed inside, and as its readiness probe still does) and
// with DialContext from inside (the setns at dial time included), and
// with the whole dial on a thread switched inside; no firewall.
func BenchmarkDial(b *testing.B) {
	netnstest.RequireRoot(b)
	m := newManager(b)
	b.Cleanup(func() { m.Settle(context.Background()) }) // after create's destroy
	sb := create(b, m, "dial")
	listenIn(b, sb, 3000, "dial")
	addr := hostPort(sb.Addr(), 3000)
	d := &net.Dialer{Control: netns.MarkSocket}
	dials := map[string]func() (net.Conn, error){
		"from=host":   func() (net.Conn, error) { return d.Dial("tcp4", addr) },
		"from=inside": func() (net.Conn, error) { return sb.DialContext(b.Context(), d, "tcp4", addr) },
		// The whole dial on the locked thread in the namespace, the
		// connect's wait included (DialContext's first version).
		"from=inside-locked": func() (c net.Conn, err error) {
			err = sb.Do(func() (err error) {
				c, err = d.Dial("tcp4", addr)
				return err
			})
			return c, err
		},
	}
	for _, name := range []string{"from=host", "from=inside", "from=inside-locked"} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				c, err := dials[name]()
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}
