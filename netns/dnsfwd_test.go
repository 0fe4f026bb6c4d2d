package netns_test

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/dnsfwd"
	"github.com/miekg/dns"
)

// testResolver runs a DNS server on loopback, standing for the host's
// resolver (as systemd-resolved on 127.0.0.53 would be), that knows
// one name.
func testResolver(t *testing.T, name string, a netip.Addr) string {
	t.Helper()
	pc, ln, err := dnsfwd.ListenPair("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if len(q.Question) == 1 && q.Question[0].Name == name && q.Question[0].Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: a.AsSlice()})
		} else {
			m.SetRcode(q, dns.RcodeNameError)
		}
		w.WriteMsg(m)
	})
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go s.ActivateAndServe()
		t.Cleanup(func() { s.Shutdown() })
	}
	return pc.LocalAddr().String()
}

// TestFirewallDNS: a name the host's resolver (on the host's loopback,
// out of a sandbox's reach) knows resolves inside env A, over UDP and
// TCP, whatever resolver address A asks; a process outside the pool gets
// no answer from the forwarder.
func TestFirewallDNS(t *testing.T) {
	keepIPForward(t)
	m := newManager(t)
	want := netip.MustParseAddr("192.0.2.99")
	up := testResolver(t, "db.envgate.test.", want)
	fwd, err := dnsfwd.Start(dnsfwd.Config{Clients: m.Pool().Prefix(), Upstreams: []string{up}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fwd.Close() })
	fw, err := netns.OpenFirewall(netns.FirewallConfig{Prefix: m.Prefix(), DNSPort: fwd.Port(), Pool: m.Pool().Prefix(),
		Policies: []netns.Policy{{Name: "web", Egress: netns.EgressInternet}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fw.Close() })
	a := create(t, m, "a")
	attach(t, fw, a, "web")

	q := new(dns.Msg)
	q.SetQuestion("db.envgate.test.", dns.TypeA)
	// The address A's resolv.conf names does not matter: the host's
	// (here a documentation address), or A's own host end.
	for _, server := range []string{"198.51.100.53:53", hostPort(a.Slot.Host, 53)} {
		for _, network := range []string{"udp", "tcp"} {
			// UDP may lose a datagram on a loaded machine; stub
			// resolvers ask again, and so does the test.
			var r *dns.Msg
			for try := 0; try < 3; try++ {
				err = a.Do(func() (err error) {
					r, _, err = (&dns.Client{Net: network, Timeout: 2 * time.Second}).Exchange(q, server)
					return err
				})
				if err == nil {
					break
				}
			}
			if err != nil {
				t.Errorf("query %s over %s from A: %v", server, network, err)
				continue
			}
			if len(r.Answer) != 1 || !r.Answer[0].(*dns.A).A.Equal(want.AsSlice()) {
				t.Errorf("query %s over %s from A: answer %v, want %s", server, network, r.Answer, want)
			}
		}
	}
	// The forwarder listens on the host's wildcard address; from outside
	// the pool it answers nothing.
	if _, _, err := (&dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}).Exchange(q, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(fwd.Port())))); err == nil {
		t.Errorf("the forwarder answered a host process outside the pool")
	}
}
