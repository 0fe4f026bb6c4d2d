package netns_test

import (
	"net"
	"net/http"
	"net/netip"
	"testing"

	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
)

// A listen probe sees a listener in its sandbox's namespace, on the
// sandbox's address, on the IPv4 wildcard or dual-stack on the IPv6 one,
// and nothing on other ports or in other namespaces.
func TestListenProbe(t *testing.T) {
	netnstest.RequireRoot(t)
	m := newManager(t)
	sb, other := create(t, m, "lp"), create(t, m, "lq")
	p, err := sb.ListenProbe()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ap := func(port int) netip.AddrPort { return netip.AddrPortFrom(sb.Addr(), uint16(port)) }
	listen := func(network, addr string) net.Listener {
		t.Helper()
		var ln net.Listener
		if err := sb.Do(func() (err error) { ln, err = net.Listen(network, addr); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln
	}
	check := func(what string, a netip.AddrPort, want bool) {
		t.Helper()
		got, err := p.Listening(a)
		if err != nil || got != want {
			t.Errorf("%s: Listening(%s) = %v, %v; want %v", what, a, got, err, want)
		}
	}
	check("nothing yet", ap(3000), false)
	ln := listen("tcp4", sb.Addr().String()+":3000")
	check("on the address", ap(3000), true)
	check("another port", ap(3001), false)
	ln.Close()
	check("closed", ap(3000), false)
	listen("tcp4", ":3002")
	check("IPv4 wildcard", ap(3002), true)
	listen("tcp", ":3003")
	check("dual-stack wildcard", ap(3003), true)

	q, err := other.ListenProbe()
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if got, err := q.Listening(netip.AddrPortFrom(other.Addr(), 3002)); err != nil || got {
		t.Errorf("another sandbox's probe sees this one's listener: %v, %v", got, err)
	}
}

// BenchmarkNotListening asks whether anything listens on a port of a
// sandbox where nothing does, side by side: by the listen probe
// (sock_diag), by an HTTP request as a readiness probe makes it, and by
// connecting alone (a refused connect: a socket, a SYN through the veth,
// a reset).
func BenchmarkNotListening(b *testing.B) {
	netnstest.RequireRoot(b)
	prefix := netnstest.Prefix(b)
	m, err := netns.New(netns.Config{Prefix: prefix, Pool: netnstest.Pool(0)})
	if err != nil {
		b.Fatal(err)
	}
	sb, err := m.Create(b.Context(), "nl")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := m.Destroy(sb); err != nil {
			b.Error(err)
		}
		m.Settle(b.Context())
	})
	ap := netip.AddrPortFrom(sb.Addr(), 3000)
	b.Run("by=sockdiag", func(b *testing.B) {
		p, err := sb.ListenProbe()
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		for b.Loop() {
			if up, err := p.Listening(ap); err != nil || up {
				b.Fatal(up, err)
			}
		}
	})
	b.Run("by=http", func(b *testing.B) {
		// As lifecycle/devserver's probe client: a new connection per probe.
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{Control: netns.MarkSocket}).DialContext}}
		for b.Loop() {
			if r, err := c.Get("http://" + ap.String() + "/healthz"); err == nil {
				r.Body.Close()
				b.Fatal("connected")
			}
		}
	})
	b.Run("by=connect", func(b *testing.B) {
		d := net.Dialer{Control: netns.MarkSocket}
		for b.Loop() {
			if c, err := d.DialContext(b.Context(), "tcp", ap.String()); err == nil {
				c.Close()
				b.Fatal("connected")
			}
		}
	})
}
