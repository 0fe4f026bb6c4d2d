package netns_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// openFirewall opens the firewall of m's prefix; when the test ends it
// is closed and its table must be gone.
func openFirewall(t *testing.T, m *netns.Manager, policies ...netns.Policy) *netns.Firewall {
	t.Helper()
	fw, err := netns.OpenFirewall(netns.FirewallConfig{Prefix: m.Prefix(), Policies: policies, Pool: m.Pool().Prefix()})
	if err != nil {
		t.Fatalf("open firewall: %v", err)
	}
	t.Cleanup(func() {
		if err := fw.Close(); err != nil {
			t.Errorf("close firewall: %v", err)
		}
		if tableExists(t, netns.TableName(m.Prefix())) {
			t.Errorf("table %s left after Close", netns.TableName(m.Prefix()))
		}
	})
	return fw
}

func attach(t *testing.T, fw *netns.Firewall, sb *netns.Sandbox, policy string) {
	t.Helper()
	if err := fw.Attach(sb, policy); err != nil {
		t.Fatalf("attach %s to %q: %v", sb.Name, policy, err)
	}
}

// createFor makes sandbox id as the gateway does for an env of policy:
// with the policy's Setup (CreateWith), then attached.
func createFor(t *testing.T, m *netns.Manager, fw *netns.Firewall, id, policy string) *netns.Sandbox {
	t.Helper()
	setup, err := fw.Setup(policy)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := m.CreateWith(context.Background(), id, setup)
	if err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
	t.Cleanup(func() {
		if err := m.Destroy(sb); err != nil {
			t.Errorf("destroy %s: %v", id, err)
		}
	})
	attach(t, fw, sb, policy)
	return sb
}

func tableExists(t *testing.T, name string) bool {
	t.Helper()
	out, err := exec.Command("nft", "list", "tables").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables: %v: %s", err, out)
	}
	return strings.Contains(string(out), " "+name+"\n")
}

// ipForward reads net.ipv4.ip_forward; the test restores it if the code
// under test did not.
func ipForward(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func keepIPForward(t *testing.T) {
	before := ipForward(t)
	// Another envgate on the machine (a parallel test process) that
	// turned forwarding on may leave it to this test's firewall to turn
	// off, or the other way round: then the check says nothing.
	contested := otherGuard(t)
	t.Cleanup(func() {
		if now := ipForward(t); now != before && !contested && !otherGuard(t) {
			t.Errorf("ip_forward = %s after the test, was %s", now, before)
			os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(before), 0o644)
		}
	})
}

// hostListener listens on the host at addr ("0.0.0.0:0") and answers
// every connection with a greeting.
func hostListener(t *testing.T, addr string) int {
	t.Helper()
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	serveGreetings(ln, "host")
	return ln.Addr().(*net.TCPAddr).Port
}

// Timeouts of dials expected to fail (a drop never answers) and of those
// expected to succeed (on a loaded machine the first packet of a new
// path can take a while).
const (
	failFast  = 300 * time.Millisecond
	succeedBy = 5 * time.Second
)

// dialFrom connects from inside sb to addr and reads one line, waiting
// up to timeout.
func dialFrom(sb *netns.Sandbox, addr string, timeout time.Duration) error {
	var c net.Conn
	err := sb.Do(func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	if err != nil {
		return err
	}
	_, err = readGreeting(c)
	return err
}

// dialHost connects from the host to addr, marked as the gateway's own
// connections are or not.
func dialHost(addr string, marked bool, timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout}
	if marked {
		d.Control = netns.MarkSocket
	}
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		return err
	}
	_, err = readGreeting(c)
	return err
}

func hostPort(a netip.Addr, port int) string { return net.JoinHostPort(a.String(), strconv.Itoa(port)) }

// uplinkAddr returns an IPv4 address of the interface of the host's
// default route, if there is one.
func uplinkAddr(t *testing.T) (netip.Addr, bool) {
	routes, err := netlink.RouteGet(net.IPv4(192, 0, 2, 200))
	if err != nil || len(routes) == 0 {
		return netip.Addr{}, false
	}
	l, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return netip.Addr{}, false
	}
	addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && ip.IsGlobalUnicast() {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// metadataLink puts 169.254.169.254 on an interface of the host (a veth
// pair, both ends in the root namespace: this kernel has no dummy), as a
// cloud's metadata service would answer there.
func metadataLink(t *testing.T, prefix string) netip.Addr {
	t.Helper()
	d := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: prefix + "md"}, PeerName: prefix + "mp"}
	if err := netlink.LinkAdd(d); err != nil {
		t.Fatalf("add dummy: %v", err)
	}
	t.Cleanup(func() { netlink.LinkDel(d) })
	addr, _ := netlink.ParseAddr("169.254.169.254/32")
	if err := netlink.AddrAdd(d, addr); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(d); err != nil {
		t.Fatal(err)
	}
	return netip.MustParseAddr("169.254.169.254")
}

// foreignTable installs a table of someone else's, with a base chain
// whose policy is drop, on the forward hook (as Docker's FORWARD chain
// is): envgate must work next to it and never remove it.
func foreignTable(t *testing.T, prefix string) *nftables.Table {
	t.Helper()
	cc := &nftables.Conn{}
	tb := cc.AddTable(&nftables.Table{Name: "foreign-" + prefix, Family: nftables.TableFamilyINet})
	drop := nftables.ChainPolicyDrop
	cc.AddChain(&nftables.Chain{Name: "forward", Table: tb, Hooknum: nftables.ChainHookForward,
		Priority: nftables.ChainPriorityFilter, Type: nftables.ChainTypeFilter, Policy: &drop})
	if err := cc.Flush(); err != nil {
		t.Fatalf("foreign table: %v", err)
	}
	t.Cleanup(func() {
		cc.DelTable(tb)
		cc.Flush()
	})
	return tb
}

func foreignIntact(t *testing.T, tb *nftables.Table) {
	t.Helper()
	c, err := (&nftables.Conn{}).ListChain(tb, "forward")
	if err != nil || c.Policy == nil || *c.Policy != nftables.ChainPolicyDrop {
		t.Errorf("foreign table %s changed: %+v %v", tb.Name, c, err)
	}
}

// TestFirewallConfinesSandbox: from inside env A (with a default route,
// so it is the policy, not a missing route, that stops it), the host's
// services on 0.0.0.0 and 127.0.0.1, env B, the metadata address and
// the host's uplink address are unreachable; the gateway (a marked
// socket) reaches A and B, and no other local process does. A is made
// as the gateway makes an env's sandbox (the policy's Setup, then
// Attach), B is made first and attached after.
func TestFirewallConfinesSandbox(t *testing.T) {
	keepIPForward(t)
	m := newManager(t)
	foreign := foreignTable(t, m.Prefix())
	fw := openFirewall(t, m, netns.Policy{Name: "web", Egress: netns.EgressInternet})
	a, b := createFor(t, m, fw, "a", "web"), create(t, m, "b")
	attach(t, fw, b, "web")
	listenIn(t, a, 3000, "a")
	listenIn(t, b, 3000, "b")
	wild := hostListener(t, "0.0.0.0:0")
	local := hostListener(t, "127.0.0.1:0")
	meta := metadataLink(t, m.Prefix())

	unreachable := map[string]string{
		"host service on 0.0.0.0 via A's host end": hostPort(a.Slot.Host, wild),
		"host service on 127.0.0.1":                "127.0.0.1:" + strconv.Itoa(local),
		"host service on 127.0.0.1 via host end":   hostPort(a.Slot.Host, local),
		"B's host end":                             hostPort(b.Slot.Host, wild),
		"env B":                                    hostPort(b.Addr(), 3000),
		"metadata":                                 hostPort(meta, wild),
	}
	if up, ok := uplinkAddr(t); ok {
		unreachable["uplink address "+up.String()] = hostPort(up, wild)
	}
	for what, addr := range unreachable {
		if err := dialFrom(a, addr, failFast); err == nil {
			t.Errorf("A reached %s (%s)", what, addr)
		}
	}
	for _, sb := range []*netns.Sandbox{a, b} {
		if err := dialHost(hostPort(sb.Addr(), 3000), true, succeedBy); err != nil {
			t.Errorf("gateway's marked dial to %s: %v", sb.ID, err)
		}
		if err := dialHost(hostPort(sb.Addr(), 3000), false, failFast); err == nil {
			t.Errorf("an unmarked local process reached %s", sb.ID)
		}
	}
	foreignIntact(t, foreign)

	// Without the firewall, the same dials go through: the policy is
	// what stopped them.
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	for _, what := range []string{"host service on 0.0.0.0 via A's host end", "metadata"} {
		if err := dialFrom(a, unreachable[what], succeedBy); err != nil {
			t.Errorf("without the firewall, A does not reach %s either: %v", what, err)
		}
	}
	if err := dialHost(hostPort(a.Addr(), 3000), false, succeedBy); err != nil {
		t.Errorf("without the firewall, an unmarked dial to A fails: %v", err)
	}
	foreignIntact(t, foreign)
}

// internet makes a namespace standing for the internet: a sandbox of
// another prefix (so, to the firewall under test, a host link like any
// uplink) at 203.0.113.x (TEST-NET-3, not a private range), with a
// server on each of ports. Packets to it never leave the machine.
func internet(t *testing.T, ports ...int) netip.Addr {
	t.Helper()
	m, err := netns.New(netns.Config{Prefix: netnstest.Prefix(t), Pool: netip.MustParsePrefix("203.0.113.0/28")})
	if err != nil {
		t.Fatal(err)
	}
	sb := create(t, m, "internet")
	for _, p := range ports {
		listenIn(t, sb, p, "internet")
	}
	routes, err := netlink.RouteGet(sb.Addr().AsSlice())
	if err != nil || len(routes) == 0 {
		t.Fatalf("no route to %s: %v", sb.Addr(), err)
	}
	if l, err := netlink.LinkByIndex(routes[0].LinkIndex); err != nil || l.Attrs().Name != sb.HostIf {
		t.Fatalf("route to %s is not via %s: %+v", sb.Addr(), sb.HostIf, routes[0])
	}
	return sb.Addr()
}

// TestFirewallEgress: the test internet is reachable from A with egress
// internet, unreachable with none, and only on the allowed port with an
// allow list; private ranges stay closed with internet. A goes from
// policy to policy, and so does S, made as a warm spare is (the Setup of
// no policy); a sandbox made for each policy (its Setup, as the gateway
// makes them) reaches the same.
func TestFirewallEgress(t *testing.T) {
	keepIPForward(t)
	m := newManager(t)
	inet := internet(t, 8080, 8081)
	fw := openFirewall(t, m,
		netns.Policy{Name: "internet", Egress: netns.EgressInternet},
		netns.Policy{Name: "none", Egress: netns.EgressNone},
		netns.Policy{Name: "allow", Egress: netns.EgressAllow,
			Allow: []netns.Destination{{Prefix: netip.PrefixFrom(inet, 32), Port: 8080}}},
	)
	if ipForward(t) != "1" {
		t.Fatalf("ip_forward is off with egress in use")
	}
	a, spare := create(t, m, "a"), createFor(t, m, fw, "s", "")
	for i, c := range []struct {
		policy     string
		want8080   bool
		want8081   bool
		wantRouted bool
	}{
		{"internet", true, true, true},
		{"none", false, false, false},
		{"allow", true, false, true},
		{"", false, false, false},
		{"internet", true, true, true},
	} {
		attach(t, fw, a, c.policy)
		attach(t, fw, spare, c.policy)
		sbs := []*netns.Sandbox{a, spare}
		if i < 4 {
			sbs = append(sbs, createFor(t, m, fw, fmt.Sprint("for", i), c.policy))
		}
		for _, sb := range sbs {
			for port, want := range map[int]bool{8080: c.want8080, 8081: c.want8081} {
				timeout := failFast
				if want {
					timeout = succeedBy
				}
				err := dialFrom(sb, hostPort(inet, port), timeout)
				if (err == nil) != want {
					t.Errorf("%s, policy %q: reach internet port %d: %v, want reachable %v", sb.ID, c.policy, port, err, want)
				}
			}
		}
	}
}

// TestFirewallHostPorts: with host port P, A reaches the host on P at
// its own host end, and on nothing else.
func TestFirewallHostPorts(t *testing.T) {
	m := newManager(t)
	open := hostListener(t, "0.0.0.0:0")
	closed := hostListener(t, "0.0.0.0:0")
	fw := openFirewall(t, m, netns.Policy{Name: "db", HostPorts: []uint16{uint16(open)}})
	a, b := create(t, m, "a"), create(t, m, "b")
	attach(t, fw, a, "db")
	if err := dialFrom(a, hostPort(a.Slot.Host, open), succeedBy); err != nil {
		t.Errorf("A does not reach its host port %d: %v", open, err)
	}
	if err := dialFrom(a, hostPort(a.Slot.Host, closed), failFast); err == nil {
		t.Errorf("A reaches host port %d, not listed", closed)
	}
	if err := dialFrom(b, hostPort(b.Slot.Host, open), failFast); err == nil {
		t.Errorf("B, without the policy, reaches host port %d", open)
	}
	if err := fw.Detach(a); err != nil {
		t.Fatal(err)
	}
	if err := dialFrom(a, hostPort(a.Slot.Host, open), failFast); err == nil {
		t.Errorf("A reaches host port %d after Detach", open)
	}
	// DetachAll, as a shutdown does: one transaction, sandboxes without
	// a policy (A now) skipped.
	attach(t, fw, b, "db")
	if err := dialFrom(b, hostPort(b.Slot.Host, open), succeedBy); err != nil {
		t.Errorf("B, attached, does not reach host port %d: %v", open, err)
	}
	if err := fw.DetachAll([]*netns.Sandbox{a, b}); err != nil {
		t.Fatal(err)
	}
	if err := dialFrom(b, hostPort(b.Slot.Host, open), failFast); err == nil {
		t.Errorf("B reaches host port %d after DetachAll", open)
	}
}

// TestFirewallRemovedAfterCrash: a firewall never closed (its process
// was killed) is removed by RemoveFirewall (what `envgate gc` calls):
// the table goes, ip_forward is as before, the foreign table stays. A
// successor's OpenFirewall replaces the table and keeps set members.
func TestFirewallRemovedAfterCrash(t *testing.T) {
	keepIPForward(t)
	m := newManager(t)
	foreign := foreignTable(t, m.Prefix())
	before := ipForward(t)
	policies := []netns.Policy{{Name: "web", Egress: netns.EgressInternet}}
	fw, err := netns.OpenFirewall(netns.FirewallConfig{Prefix: m.Prefix(), Policies: policies})
	if err != nil {
		t.Fatal(err)
	}
	a := create(t, m, "a")
	attach(t, fw, a, "web")

	// A successor (a handoff) takes over the table: A keeps its policy.
	next, err := netns.OpenFirewall(netns.FirewallConfig{Prefix: m.Prefix(), Policies: policies})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("nft", "list", "set", "inet", netns.TableName(m.Prefix()), "p-web").CombinedOutput()
	if !strings.Contains(string(out), a.HostIf) {
		t.Errorf("successor's set p-web lost %s:\n%s", a.HostIf, out)
	}
	if err := next.Attach(a, "web"); err != nil {
		t.Errorf("re-attach after takeover: %v", err)
	}

	if err := netns.RemoveFirewall(m.Prefix()); err != nil {
		t.Fatalf("RemoveFirewall: %v", err)
	}
	if tableExists(t, netns.TableName(m.Prefix())) {
		t.Errorf("table left after RemoveFirewall")
	}
	if now := ipForward(t); now != before && !otherGuard(t) {
		t.Errorf("ip_forward = %s after RemoveFirewall, was %s", now, before)
	}
	if err := netns.RemoveFirewall(m.Prefix()); err != nil {
		t.Errorf("second RemoveFirewall: %v", err)
	}
	foreignIntact(t, foreign)
	if err := netns.RemoveFirewall("docker"); err != nil {
		t.Errorf("RemoveFirewall of a prefix with no table: %v", err)
	}
	// Both values only close their netlink sockets now.
	for _, f := range []*netns.Firewall{fw, next} {
		if err := f.Close(); err != nil {
			t.Errorf("close after removal: %v", err)
		}
	}
}

// otherGuard reports whether another envgate table (a parallel test
// process's) still keeps forwarding on.
func otherGuard(t *testing.T) bool {
	out, _ := exec.Command("nft", "list", "chains").CombinedOutput()
	return strings.Contains(string(out), "chain guard")
}

// benchFirewall returns a manager for a benchmark's sandboxes and a
// firewall with one policy, "web", with egress; closing it is the
// benchmark's.
func benchFirewall(b *testing.B) (*netns.Manager, *netns.Firewall) {
	b.Helper()
	m, err := netns.New(netns.Config{Prefix: netnstest.Prefix(b), Pool: netnstest.Pool(0)})
	if err != nil {
		b.Fatal(err)
	}
	fw, err := netns.OpenFirewall(netns.FirewallConfig{Prefix: m.Prefix(),
		Policies: []netns.Policy{{Name: "web", Egress: netns.EgressInternet}}})
	if err != nil {
		b.Fatal(err)
	}
	return m, fw
}

// BenchmarkFirewallAttach attaches one sandbox to a policy with egress
// and detaches it, per iteration: after the first, its IPv6 is off and
// its route in place, so this is the set element's transaction, in and
// out. BenchmarkFirewallCreate has the firewall's share of a start.
func BenchmarkFirewallAttach(b *testing.B) {
	m, fw := benchFirewall(b)
	defer fw.Close()
	sb, err := m.Create(b.Context(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer m.Destroy(sb)
	for b.Loop() {
		if err := fw.Attach(sb, "web"); err != nil {
			b.Fatal(err)
		}
		if err := fw.Detach(sb); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFirewallCreate is the firewall's share of a cold start with a
// fresh sandbox, side by side: "off" makes a sandbox (Create); "on" makes
// it as the gateway does with the firewall on (the policy's Setup, then
// Attach); "late" makes it and then attaches it (Attach then turns IPv6
// off and adds the route on links that are up, as starts did before
// Setup); "spare" times only the Attach that gives a warm spare (made
// with the Setup of no policy) to an env with egress, its route included.
// BenchmarkFirewallAttach attaches one sandbox again and again, which
// finds IPv6 off and the route in place after the first time.
func BenchmarkFirewallCreate(b *testing.B) {
	m, fw := benchFirewall(b)
	b.Cleanup(func() {
		fw.Close()
		m.Settle(context.Background())
	})
	n := 0
	for _, mode := range []string{"off", "on", "late", "spare"} {
		b.Run(mode, func(b *testing.B) {
			var sbs []*netns.Sandbox
			for b.Loop() {
				n++
				var setup netns.Setup
				var err error
				switch mode {
				case "on":
					setup, err = fw.Setup("web")
				case "spare":
					b.StopTimer()
					setup, err = fw.Setup("")
				}
				var sb *netns.Sandbox
				if err == nil {
					sb, err = m.CreateWith(b.Context(), fmt.Sprint("c", n), setup)
				}
				if mode == "spare" {
					b.StartTimer()
				}
				if err == nil && mode != "off" {
					err = fw.Attach(sb, "web")
				}
				if err != nil {
					b.Fatal(err)
				}
				sbs = append(sbs, sb)
				if len(sbs) == 32 {
					// Out of the timing: the kernel deletes namespaces
					// in the background.
					b.StopTimer()
					destroyAll(b, m, fw, sbs)
					sbs = sbs[:0]
					b.StartTimer()
				}
			}
			b.StopTimer()
			destroyAll(b, m, fw, sbs)
		})
	}
}

func destroyAll(b *testing.B, m *netns.Manager, fw *netns.Firewall, sbs []*netns.Sandbox) {
	if err := fw.DetachAll(sbs); err != nil {
		b.Error(err)
	}
	if err := m.DestroyAll(sbs); err != nil {
		b.Error(err)
	}
	if err := m.Settle(context.Background()); err != nil {
		b.Error(err)
	}
}

// TestProcInstanceIsThreadsNamespace: the procfs instance the sandbox's
// sysctl is written through (kernel 5.8 and later; else /proc is used)
// shows the network namespace of the thread that looks in it, as /proc
// does.
func TestProcInstanceIsThreadsNamespace(t *testing.T) {
	if root, err := netns.NewProcInstance(); errors.Is(err, unix.ENOSYS) {
		t.Skipf("no fsopen (kernel before 5.2): %v", err)
	} else if err == nil {
		unix.Close(root)
	}
	m := newManager(t)
	a := create(t, m, "a")
	read := func(dir int, path string) (string, error) {
		fd, err := unix.Openat(dir, path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		f := os.NewFile(uintptr(fd), path)
		defer f.Close()
		b, err := io.ReadAll(f)
		return strings.TrimSpace(string(b)), err
	}
	// The host end exists in the host's namespace only, lo in each. Runs
	// on the sandbox's thread too: t.Errorf only.
	hostEnd := "sys/net/ipv4/conf/" + a.HostIf + "/forwarding"
	look := func(inside bool) error {
		root, err := netns.NewProcInstance()
		if err != nil {
			return fmt.Errorf("procfs instance: %w", err)
		}
		defer unix.Close(root)
		got, err := read(root, "sys/net/ipv4/conf/lo/forwarding")
		if err != nil {
			return err
		}
		if want, err := read(unix.AT_FDCWD, "/proc/sys/net/ipv4/conf/lo/forwarding"); err != nil || got != want {
			t.Errorf("inside %v: lo forwarding %s through the instance, %s (%v) through /proc", inside, got, want, err)
		}
		_, err = read(root, hostEnd)
		if inside && !errors.Is(err, unix.ENOENT) {
			t.Errorf("inside the sandbox, the instance shows the host's %s (%v)", hostEnd, err)
		}
		if !inside && err != nil {
			t.Errorf("in the host's namespace, the instance lacks %s: %v", hostEnd, err)
		}
		return nil
	}
	if err := look(false); err != nil {
		t.Fatal(err)
	}
	if err := a.Do(func() error { return look(true) }); err != nil {
		t.Fatal(err)
	}
}

// TestFirewallClosesIPv6: an attached sandbox has IPv6 off on both ends
// of its veth (no link-local address to reach anything by), whether it
// was made with its policy's Setup (as the gateway makes them) or
// attached after, and the table drops IPv6 from and to sandboxes anyway.
func TestFirewallClosesIPv6(t *testing.T) {
	m := newManager(t)
	fw := openFirewall(t, m, netns.Policy{Name: "web", Egress: netns.EgressInternet})
	a := create(t, m, "a")
	attach(t, fw, a, "web")
	read := func(dev string) string {
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + dev + "/disable_ipv6")
		if err != nil {
			t.Fatalf("%s: %v", dev, err)
		}
		return strings.TrimSpace(string(b))
	}
	for _, sb := range []*netns.Sandbox{a, createFor(t, m, fw, "b", "web")} {
		if v := read(sb.HostIf); v != "1" {
			t.Errorf("host end %s: disable_ipv6 = %s", sb.HostIf, v)
		}
		err := sb.Do(func() error {
			for _, dev := range []string{"all", "default", "lo", netns.PeerIfName} {
				if v := read(dev); v != "1" {
					t.Errorf("inside %s: %s disable_ipv6 = %s", sb.Name, dev, v)
				}
			}
			addrs, err := netlink.AddrList(nil, netlink.FAMILY_V6)
			for _, ad := range addrs {
				if !ad.IP.IsLoopback() {
					t.Errorf("inside %s: IPv6 address %s", sb.Name, ad.IP)
				}
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("nft", "list", "table", "inet", netns.TableName(m.Prefix())).CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(out), "meta nfproto ipv6 drop"); n < 4 {
		t.Errorf("%d chains drop IPv6, want 4 (input, out, back, connect):\n%s", n, out)
	}
}
