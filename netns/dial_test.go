package netns_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/envgate/envgate/netns"
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
