package netns_test

import (
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
)

// BenchmarkFirewallFirstConnect times what a readiness probe meets in a
// sandbox just made, with the firewall off and on, side by side: the
// gateway's first connection to a listener in it (a marked dial from the
// host, until the listener's greeting is read: SYN, SYN-ACK, the first
// packets of the connection through the table's hooks, connection
// tracking and its NAT chains where they run), then a second one. "on"
// makes the sandbox as the gateway does (its policy's Setup, then Attach:
// egress internet, a DNS forwarder's port), so the set update that
// attach commits comes just before the first connect, as in a start.
//
// Connection tracking is turned on per network namespace by a table
// that uses it, so "off" must have no table at all: each round opens the
// firewall for its "on" sandboxes and closes it for its "off" ones, in
// the order off-on or on-off by turns, and pairs the round's medians.
// It reports the p50 of each mode's first and second connects, in µs,
// and the median over rounds of on − off (first-delta-us).
func BenchmarkFirewallFirstConnect(b *testing.B) {
	netnstest.RequireRoot(b)
	m, err := netns.New(netns.Config{Prefix: netnstest.Prefix(b), Pool: netnstest.Pool(0)})
	if err != nil {
		b.Fatal(err)
	}
	const perMode = 4 // sandboxes per mode and round
	gw := &net.Dialer{Timeout: succeedBy, Control: netns.MarkSocket}
	var first, second [2][]time.Duration // by mode: 0 off, 1 on
	var delta []time.Duration
	n := 0
	// start makes one sandbox (under fw, if not nil) with a listener and
	// times the two connects.
	start := func(fw *netns.Firewall) (time.Duration, time.Duration) {
		n++
		id := fmt.Sprint("f", n)
		var sb *netns.Sandbox
		var err error
		if fw == nil {
			sb, err = m.Create(b.Context(), id)
		} else {
			var setup netns.Setup
			if setup, err = fw.Setup("web"); err == nil {
				if sb, err = m.CreateWith(b.Context(), id, setup); err == nil {
					err = fw.Attach(sb, "web")
				}
			}
		}
		if err != nil {
			b.Fatal(err)
		}
		defer func() {
			if fw != nil {
				if err := fw.Detach(sb); err != nil {
					b.Error(err)
				}
			}
			if err := m.Destroy(sb); err != nil {
				b.Error(err)
			}
		}()
		var ln net.Listener
		if err := sb.Do(func() (err error) {
			ln, err = net.Listen("tcp4", ":3000")
			return err
		}); err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		serveGreetings(ln, "env")
		addr := hostPort(sb.Addr(), 3000)
		var took [2]time.Duration
		for i := range took {
			began := time.Now()
			c, err := gw.Dial("tcp4", addr)
			if err == nil {
				_, err = readGreeting(c)
			}
			took[i] = time.Since(began)
			if err != nil {
				b.Fatalf("connect %d to %s: %v", i+1, addr, err)
			}
		}
		return took[0], took[1]
	}
	// mode runs perMode starts of one mode and returns the median of
	// their first connects.
	mode := func(on bool) time.Duration {
		var fw *netns.Firewall
		k := 0
		if on {
			k = 1
			var err error
			fw, err = netns.OpenFirewall(netns.FirewallConfig{Prefix: m.Prefix(), DNSPort: 5353, Pool: m.Pool().Prefix(),
				Policies: []netns.Policy{{Name: "web", Egress: netns.EgressInternet}}})
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				if err := fw.Close(); err != nil {
					b.Error(err)
				}
			}()
		}
		var round []time.Duration
		for range perMode {
			f, s := start(fw)
			first[k], second[k] = append(first[k], f), append(second[k], s)
			round = append(round, f)
		}
		slices.Sort(round)
		return (round[perMode/2-1] + round[perMode/2]) / 2
	}
	for i := 0; b.Loop(); i++ {
		var off, on time.Duration
		if i%2 == 0 {
			off, on = mode(false), mode(true)
		} else {
			on, off = mode(true), mode(false)
		}
		delta = append(delta, on-off)
	}
	if err := m.Settle(b.Context()); err != nil {
		b.Error(err)
	}
	us := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Nanoseconds()) / 1e3
	}
	b.ReportMetric(us(first[0]), "off-first-us")
	b.ReportMetric(us(first[1]), "on-first-us")
	b.ReportMetric(us(second[0]), "off-second-us")
	b.ReportMetric(us(second[1]), "on-second-us")
	b.ReportMetric(us(delta), "first-delta-us")
	b.ReportMetric(0, "ns/op")
}
