package netns_test

import (
	"fmt"
	"math"
	"os/exec"
	"strings"
	"testing"

	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
)

// BenchmarkFirewallAttachLive is the firewall's share of a start (a
// sandbox made with its policy's Setup, then attached: as
// BenchmarkFirewallCreate's "on") with 0 and 960 other sandboxes live
// (about as many as its /20 pool holds, with room for those it makes):
// what of it grows with the number of envs (sysctl paths under
// /proc/sys/net are looked up through dcache chains with an entry per
// network namespace, unless through a procfs instance of their own:
// policy_sandbox.go). The sandboxes it makes are destroyed out of the
// timing, 32 at a time.
func BenchmarkFirewallAttachLive(b *testing.B) {
	m, fw := benchFirewall(b)
	var sbs []*netns.Sandbox
	b.Cleanup(func() {
		fw.Close()
		if err := m.DestroyAll(sbs); err != nil {
			b.Error(err)
		}
		m.Settle(b.Context())
	})
	setup, err := fw.Setup("web")
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, live := range []int{0, 960} {
		for len(sbs) < live {
			// Each live env made as at a start.
			o, err := m.CreateWith(b.Context(), fmt.Sprint("o", len(sbs)), setup)
			if err != nil {
				b.Fatal(err)
			}
			sbs = append(sbs, o)
			if err := fw.Attach(o, "web"); err != nil {
				b.Fatal(err)
			}
		}
		// The sandbox's sysctl through a procfs instance of its own (as
		// a start does) or through /proc, side by side.
		for _, via := range []struct {
			name  string
			above int64 // live sandboxes that make it use an instance
		}{{"instance", -1}, {"proc", math.MaxInt64}} {
			b.Run(fmt.Sprintf("live=%d/sysctl=%s", live, via.name), func(b *testing.B) {
				was := netns.ProcInstanceAbove.Swap(via.above)
				defer netns.ProcInstanceAbove.Store(was)
				var made []*netns.Sandbox
				b.Cleanup(func() { destroyAll(b, m, fw, made) })
				for b.Loop() {
					n++
					sb, err := m.CreateWith(b.Context(), fmt.Sprint("b", n), setup)
					if err == nil {
						err = fw.Attach(sb, "web")
					}
					if err != nil {
						b.Fatal(err)
					}
					if made = append(made, sb); len(made) == 32 {
						b.StopTimer()
						destroyAll(b, m, fw, made)
						made = made[:0]
						b.StartTimer()
					}
				}
				b.StopTimer()
			})
		}
	}
}

// TestFirewallDetachAllAtScale: a shutdown detaches 2,000 sandboxes in
// one transaction, and the table goes with Close. (One message per
// sandbox overflowed the netlink socket: ENOBUFS, then a connection out
// of step, and the table stayed behind.)
func TestFirewallDetachAllAtScale(t *testing.T) {
	netnstest.RequireRoot(t)
	prefix := netnstest.Prefix(t)
	fw, err := netns.OpenFirewall(netns.FirewallConfig{Prefix: prefix,
		Policies: []netns.Policy{{Name: "web", Egress: netns.EgressInternet}, {Name: "db", Egress: netns.EgressNone}}})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			fw.Close()
		}
		if err := netns.RemoveFirewall(prefix); err != nil {
			t.Error(err)
		}
	})
	var sbs []*netns.Sandbox
	for i := range 2000 {
		sb := &netns.Sandbox{HostIf: fmt.Sprintf("%s-%d", prefix, i)}
		if err := fw.SetMember(sb.HostIf, []string{"web", "db"}[i%2]); err != nil {
			t.Fatal(err)
		}
		sbs = append(sbs, sb)
	}
	if err := fw.DetachAll(sbs); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nft", "list", "table", "inet", netns.TableName(prefix)).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if strings.Contains(string(out), prefix+"-1") {
		t.Errorf("members left after DetachAll:\n%s", out)
	}
	closed = true
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("nft", "list", "table", "inet", netns.TableName(prefix)).CombinedOutput(); err == nil {
		t.Errorf("table still there after Close:\n%s", out)
	}
}
