package netns

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// ErrFirewallUnsupported is returned by OpenFirewall when the kernel has
// no nf_tables (or the process may not use it).
var ErrFirewallUnsupported = errors.New("netns: nftables unavailable")

// Egress is where a sandbox's own connections may go beyond the host.
type Egress int

const (
	// EgressNone: nowhere; the sandbox gets no default route.
	EgressNone Egress = iota
	// EgressInternet: anywhere outside Blocked, masqueraded behind the
	// host's address on the way out.
	EgressInternet
	// EgressAllow: only Policy.Allow's destinations (which may lie in
	// Blocked ranges: an explicit allow wins).
	EgressAllow
)

// Blocked are the destinations EgressInternet never reaches: private,
// shared (CGNAT), link-local (cloud metadata at 169.254.169.254),
// loopback, multicast and reserved ranges. The host's own addresses are
// not forwarded at all (the input chain decides for them).
var Blocked = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/3"), // multicast, reserved, broadcast
}

// Destination is one entry of an allow list: a prefix and a TCP/UDP
// port, or every port when Port is 0.
type Destination struct {
	Prefix netip.Prefix
	Port   uint16
}

// Policy is what the sandboxes attached to it may reach. The zero Policy
// reaches nothing but replies to the gateway's own connections.
type Policy struct {
	// Name identifies the policy; Attach takes it.
	Name string
	// Egress is where connections out of the host may go.
	Egress Egress
	// Allow is the allow list of EgressAllow.
	Allow []Destination
	// HostPorts are the TCP and UDP ports of the host a sandbox may
	// connect to, on its own host end address only.
	HostPorts []uint16
}

// FirewallConfig says whose firewall this is and which policies it has.
type FirewallConfig struct {
	// Prefix is the Manager's instance prefix: the table is
	// TableName(Prefix) and every host link "<Prefix>-*" is a sandbox's.
	Prefix string
	// Policies, by distinct Name. Sandboxes not attached to one get
	// the zero Policy.
	Policies []Policy
	// DNSPort, when set, is the port of a DNS forwarder listening on the
	// host's wildcard address (package dnsfwd): every DNS query of a
	// sandbox, to whatever address, is redirected there, at its own
	// host end. Default 0: DNS is traffic like any other.
	DNSPort uint16
	// Pool is the Manager's address pool (Pool().Prefix()). With it, a
	// sandbox's TCP to an address in the pool skips connection tracking
	// (but for DNS and its host ports) by a compare of its destination;
	// without it, only its packets of the gateway's connections do, found
	// by a socket lookup per packet.
	Pool netip.Prefix
}

// TableName is the name of the nftables table (family inet) of the
// firewall of instance prefix.
func TableName(prefix string) string { return "envgate-" + prefix }

// Firewall is an instance's nftables table: the kernel's policy for the
// traffic of its sandboxes. Sandboxes are matched by their host links'
// names ("<prefix>-*"), so a sandbox is confined from the moment its veth
// exists, before Attach; Attach puts its host link into the set of its
// policy, one netlink transaction per change, and no rule changes after
// OpenFirewall.
//
// The table only drops sandbox traffic, and accepts nothing another
// table would drop (an accept ends only the chain it is in): other
// software's tables (Docker, firewalld, CNI plugins) keep deciding for
// everything else, and for sandbox traffic too, where they drop it. With
// EgressInternet or EgressAllow in use, OpenFirewall turns on
// net.ipv4.ip_forward if it was off, and then adds a guard chain that
// drops every forwarded packet no envgate table let through, so no other
// interface starts routing; Close turns forwarding off again when no
// other envgate table needs it. The clients' traffic with the gateway's
// listeners skips connection tracking (SetListenerPorts), and so does the
// gateway's with sandboxes (its sockets carry DialMark; a sandbox's TCP to
// the pool skips it but for DNS and host ports, and the input chain
// accepts of that only the packets of such sockets) unless another table
// filters the host's input (hostFirewall), which may accept them by
// conntrack state only.
type Firewall struct {
	prefix    string
	dnsPort   uint16
	table     *nftables.Table
	conn      *nftables.Conn
	policies  map[string]*Policy
	sets      map[string]*nftables.Set // by policy name
	listeners *nftables.Set            // the listener ports (policy_notrack.go)
	pool      netip.Prefix             // FirewallConfig.Pool
	tracked   []uint16                 // ports of the host whose connections from sandboxes stay tracked
	guard     bool                     // the table has the guard chain
	// untrackGateway: the gateway's traffic with sandboxes skips
	// connection tracking (no host firewall at OpenFirewall).
	untrackGateway bool

	mu     sync.Mutex
	member map[string]string // guarded by mu; host link -> policy name
}

// OpenFirewall installs the firewall of cfg.Prefix and returns it. A
// table left by an earlier run of the instance (a predecessor that
// handed over, or a crash) is replaced in the same transaction, so the
// policy never lapses; the host links its sets held keep their policy
// when a policy of the same name still exists.
func OpenFirewall(cfg FirewallConfig) (_ *Firewall, err error) {
	if err := ValidatePrefix(cfg.Prefix); err != nil {
		return nil, err
	}
	f := &Firewall{
		prefix:   cfg.Prefix,
		dnsPort:  cfg.DNSPort,
		pool:     cfg.Pool.Masked(),
		table:    &nftables.Table{Name: TableName(cfg.Prefix), Family: nftables.TableFamilyINet},
		policies: map[string]*Policy{},
		sets:     map[string]*nftables.Set{},
		member:   map[string]string{},
	}
	egress := false
	for i := range cfg.Policies {
		p := &cfg.Policies[i]
		if p.Name == "" || f.policies[p.Name] != nil {
			return nil, fmt.Errorf("netns: firewall: policy name %q empty or repeated", p.Name)
		}
		f.policies[p.Name] = p
		egress = egress || p.Egress != EgressNone
		f.tracked = append(f.tracked, p.HostPorts...)
	}
	f.tracked = append(f.tracked, 53)
	if cfg.DNSPort != 0 {
		f.tracked = append(f.tracked, cfg.DNSPort)
	}
	slices.Sort(f.tracked)
	f.tracked = slices.Compact(f.tracked)
	if f.pool.IsValid() && !f.pool.Addr().Is4() {
		return nil, fmt.Errorf("netns: firewall: pool %s is not IPv4", f.pool)
	}
	f.conn, err = nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFirewallUnsupported, err)
	}
	defer func() {
		if err != nil {
			f.conn.CloseLasting()
		}
	}()
	tables, err := f.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFirewallUnsupported, err)
	}
	carried, ports, hadGuard := f.carryOver(tables)
	forwarding, err := ipForward()
	if err != nil && egress {
		return nil, err
	}
	f.guard = egress && (hadGuard || !forwarding || otherGuard(f.conn, tables, f.table.Name))
	f.untrackGateway = !hostFirewall(f.conn)
	f.build(carried, ports)
	if err := f.conn.Flush(); err != nil {
		return nil, fmt.Errorf("netns: firewall: install table %s: %w", f.table.Name, err)
	}
	// Forwarding goes on only now that the guard is in place.
	if egress && !forwarding {
		if err := setIPForward(true); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// carryOver returns the set members of an existing table of the same
// name (host link -> policy name), for policies that still exist, its
// listener ports, and whether that table had the guard chain.
func (f *Firewall) carryOver(tables []*nftables.Table) (map[string]string, []uint16, bool) {
	found := false
	for _, t := range tables {
		found = found || t.Name == f.table.Name
	}
	if !found {
		return nil, nil, false
	}
	carried := map[string]string{}
	sets, _ := f.conn.GetSets(f.table)
	for _, s := range sets {
		name, ok := strings.CutPrefix(s.Name, "p-")
		if !ok || f.policies[name] == nil {
			continue
		}
		elems, _ := f.conn.GetSetElements(s)
		for _, e := range elems {
			carried[strings.TrimRight(string(e.Key), "\x00")] = name
		}
	}
	_, err := f.conn.ListChain(f.table, "guard")
	return carried, f.carriedPorts(), err == nil
}

// otherGuard reports whether another envgate table has a guard chain:
// forwarding was off before the first of them turned it on.
func otherGuard(cc *nftables.Conn, tables []*nftables.Table, own string) bool {
	for _, t := range tables {
		if t.Name == own || !strings.HasPrefix(t.Name, "envgate-") {
			continue
		}
		if _, err := cc.ListChain(t, "guard"); err == nil {
			return true
		}
	}
	return false
}

// Attach gives sb the policy named policy ("" for the zero Policy):
// its host link joins that policy's set (leaving any other), IPv6 is
// turned off on both ends of its veth, and it gets a default route via
// its host end when the policy has egress, or loses it when not.
// Attaching again, with the same or another policy, is allowed (a warm
// spare given to an env).
//
// A sandbox made with the Setup of its policy (CreateWith) has its IPv6
// and its route already: Attach then only puts it into the set.
func (f *Firewall) Attach(sb *Sandbox, policy string) error {
	p, err := f.policy(policy)
	if err != nil {
		return err
	}
	if err := f.setMember(sb.HostIf, policy); err != nil {
		return err
	}
	return configureSandbox(sb, p.Egress != EgressNone)
}

// Setup is what Manager.CreateWith does for a sandbox to be attached to
// policy ("" for the zero Policy), as Attach would do it: IPv6 off on
// both ends, and a default route when the policy has egress.
func (f *Firewall) Setup(policy string) (Setup, error) {
	p, err := f.policy(policy)
	return Setup{NoIPv6: true, DefaultRoute: p.Egress != EgressNone}, err
}

// policy is the policy named name ("" for the zero Policy).
func (f *Firewall) policy(name string) (Policy, error) {
	if name == "" {
		return Policy{}, nil
	}
	p := f.policies[name]
	if p == nil {
		return Policy{}, fmt.Errorf("netns: firewall: no policy %q", name)
	}
	return *p, nil
}

// Detach takes sb's host link out of its policy's set; the sandbox is
// then confined to the zero Policy. Use it when the sandbox goes: its
// host link's name comes back with the next sandbox in its slot.
func (f *Firewall) Detach(sb *Sandbox) error { return f.setMember(sb.HostIf, "") }

// DetachAll is Detach for many sandboxes, in one transaction (a
// shutdown with a thousand envs would otherwise make a thousand). The
// elements go in a few messages per set, not one per sandbox: the kernel
// answers each message, and a thousand answers overflow the socket's
// receive buffer (ENOBUFS), which also leaves the connection out of step
// for the next request.
func (f *Firewall) DetachAll(sbs []*Sandbox) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	bySet := map[string][]nftables.SetElement{}
	var gone []string
	for _, sb := range sbs {
		old := f.member[sb.HostIf]
		if old == "" {
			continue
		}
		bySet[old] = append(bySet[old], nftables.SetElement{Key: ifnameKey(sb.HostIf)})
		gone = append(gone, sb.HostIf)
	}
	if len(gone) == 0 {
		return nil
	}
	for name, elems := range bySet {
		for len(elems) > 0 {
			n := min(len(elems), detachChunk)
			if err := f.conn.SetDeleteElements(f.sets[name], elems[:n]); err != nil {
				return fmt.Errorf("netns: firewall: detach from %s: %w", name, err)
			}
			elems = elems[n:]
		}
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("netns: firewall: detach %d sandboxes: %w", len(gone), err)
	}
	for _, ifname := range gone {
		delete(f.member, ifname)
	}
	return nil
}

// detachChunk is how many set elements DetachAll puts in one message
// (about 40 bytes each).
const detachChunk = 512

// setMember moves host link ifname into policy's set ("" for none) in
// one transaction.
func (f *Firewall) setMember(ifname, policy string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.member[ifname]
	if old == policy {
		return nil
	}
	key := []nftables.SetElement{{Key: ifnameKey(ifname)}}
	if old != "" {
		if err := f.conn.SetDeleteElements(f.sets[old], key); err != nil {
			return fmt.Errorf("netns: firewall: %s: %w", ifname, err)
		}
	}
	if policy != "" {
		if err := f.conn.SetAddElements(f.sets[policy], key); err != nil {
			return fmt.Errorf("netns: firewall: %s: %w", ifname, err)
		}
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("netns: firewall: %s to policy %q: %w", ifname, policy, err)
	}
	if policy == "" {
		delete(f.member, ifname)
	} else {
		f.member[ifname] = policy
	}
	return nil
}

// Close removes the table, and turns IP forwarding off when this
// firewall turned it on (or inherited that from a predecessor) and no
// other envgate table's guard still needs it. Do not Close a firewall
// whose sandboxes a successor takes over.
func (f *Firewall) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conn.CloseLasting()
	// A connection of its own: whatever went wrong on the lasting one
	// (an answer left unread) must not keep the table in place.
	cc, err := nftables.New()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrFirewallUnsupported, err)
	}
	return removeTable(cc, f.table)
}

// RemoveFirewall removes the table of instance prefix, as Close does,
// for `envgate gc` and start-up cleanup without a Firewall value. A
// table already gone is success.
func RemoveFirewall(prefix string) error {
	if err := ValidatePrefix(prefix); err != nil {
		return err
	}
	cc, err := nftables.New()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrFirewallUnsupported, err)
	}
	return removeTable(cc, &nftables.Table{Name: TableName(prefix), Family: nftables.TableFamilyINet})
}

func removeTable(cc *nftables.Conn, t *nftables.Table) error {
	tables, err := cc.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrFirewallUnsupported, err)
	}
	exists := false
	for _, x := range tables {
		exists = exists || x.Name == t.Name
	}
	if !exists {
		return nil
	}
	_, err = cc.ListChain(t, "guard")
	guard := err == nil
	cc.DelTable(t)
	if err := cc.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netns: firewall: delete table %s: %w", t.Name, err)
	}
	if guard && !otherGuard(cc, tables, t.Name) {
		return setIPForward(false)
	}
	return nil
}

const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

func ipForward() (bool, error) {
	b, err := os.ReadFile(ipForwardPath)
	if err != nil {
		return false, fmt.Errorf("netns: firewall: %w", err)
	}
	return strings.TrimSpace(string(b)) != "0", nil
}

func setIPForward(on bool) error {
	v := "0\n"
	if on {
		v = "1\n"
	}
	if err := os.WriteFile(ipForwardPath, []byte(v), 0o644); err != nil {
		return fmt.Errorf("netns: firewall: set ip_forward: %w", err)
	}
	return nil
}

// build queues the whole table: replacing one that exists, in the same
// transaction.
func (f *Firewall) build(carried map[string]string, ports []uint16) {
	cc, t := f.conn, f.table
	cc.AddTable(t) // so that the delete below cannot fail
	cc.DelTable(t)
	cc.AddTable(t)
	for name := range f.policies {
		// Host byte order, as nft keeps strings, so that `nft list`
		// shows the names.
		s := &nftables.Set{Table: t, Name: "p-" + name, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian}
		var elems []nftables.SetElement
		for ifname, p := range carried {
			if p == name {
				elems = append(elems, nftables.SetElement{Key: ifnameKey(ifname)})
				f.member[ifname] = name
			}
		}
		_ = cc.AddSet(s, elems) // errors only for malformed sets; Flush reports them
		f.sets[name] = s
	}
	f.buildNotrack(ports)
	f.buildInput()
	f.buildForward()
	f.buildOutput()
	f.buildNAT()
}

// ifs is the name prefix of every sandbox host link of the instance.
func (f *Firewall) ifs() string { return f.prefix + "-" }

// Base chains sit at the filter priority, after conntrack (ct state) and
// mangle; where among other tables' filter chains they run does not
// matter, as each only drops.
func (f *Firewall) baseChain(name string, hook *nftables.ChainHook, typ nftables.ChainType, prio *nftables.ChainPriority) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return f.conn.AddChain(&nftables.Chain{Name: name, Table: f.table, Hooknum: hook, Priority: prio, Type: typ, Policy: &accept})
}

func (f *Firewall) chain(name string) *nftables.Chain {
	return f.conn.AddChain(&nftables.Chain{Name: name, Table: f.table})
}

// buildInput: a sandbox reaches the host only with replies to the
// gateway's connections and on its policy's host ports, at its own host
// end. This covers services on 0.0.0.0 and every other host address.
// Connection tracking matches a packet to a connection by its addresses
// and ports alone, whatever link it came in on, so a sandbox's packets
// must carry its own address: else sandbox A could send what passes for
// B's replies to the gateway (a reset of the gateway's connection to B,
// say).
func (f *Firewall) buildInput() {
	cc := f.conn
	in := f.baseChain("input", nftables.ChainHookInput, nftables.ChainTypeFilter, nftables.ChainPriorityFilter)
	envIn := f.chain("env-input")
	// lo first: one compare for the host's local traffic (the gateway's
	// with local clients), which a name compare costs more.
	rule(cc, in, ifIndexIs(expr.MetaKeyIIF, expr.CmpOpEq, loopbackIndex), verdict(expr.VerdictReturn))
	rule(cc, in, ifPrefix(expr.MetaKeyIIFNAME, f.ifs(), expr.CmpOpEq), jump(expr.VerdictGoto, envIn.Name))
	rule(cc, envIn, nfproto(unix.NFPROTO_IPV6), verdict(expr.VerdictDrop))
	rule(cc, envIn, saddrNotViaIif(), verdict(expr.VerdictDrop))
	// Replies on the gateway's connections: a packet of a TCP socket
	// with DialMark (what conntrack would call established, without it:
	// these connections may be untracked). A bare ACK or RST to any
	// other host port, a listener's included, matches no such socket.
	rule(cc, envIn, l4proto(unix.IPPROTO_TCP), socketMarkIs(DialMark), verdict(expr.VerdictReturn))
	rule(cc, envIn, ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictReturn))
	if f.dnsPort != 0 {
		for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			rule(cc, envIn, l4proto(proto), dport(f.dnsPort), daddrLocalOnIif(), verdict(expr.VerdictReturn))
		}
	}
	for name, p := range f.policies {
		for _, port := range p.HostPorts {
			for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
				rule(cc, envIn, ifInSet(f.sets[name]), l4proto(proto), dport(port), daddrLocalOnIif(), verdict(expr.VerdictReturn))
			}
		}
	}
	rule(cc, envIn, verdict(expr.VerdictDrop))
}

// buildForward: a sandbox's packets leave the host only as its policy
// allows, and only replies come back; nothing goes from one sandbox to
// another. Packets let through carry fwdMark for the guard chains.
func (f *Firewall) buildForward() {
	cc := f.conn
	fwd := f.baseChain("forward", nftables.ChainHookForward, nftables.ChainTypeFilter, nftables.ChainPriorityFilter)
	out, back := f.chain("env-out"), f.chain("env-back")
	rule(cc, fwd, ifPrefix(expr.MetaKeyIIFNAME, f.ifs(), expr.CmpOpEq), setMark(fwdMark), jump(expr.VerdictGoto, out.Name))
	rule(cc, fwd, ifPrefix(expr.MetaKeyOIFNAME, f.ifs(), expr.CmpOpEq), setMark(fwdMark), jump(expr.VerdictGoto, back.Name))

	rule(cc, out, ifPrefix(expr.MetaKeyOIFNAME, f.ifs(), expr.CmpOpEq), verdict(expr.VerdictDrop))
	rule(cc, out, nfproto(unix.NFPROTO_IPV6), verdict(expr.VerdictDrop))
	// A sandbox's packets leave with its own address only (see
	// buildInput), so none goes out, masqueraded, as another's.
	rule(cc, out, saddrNotViaIif(), verdict(expr.VerdictDrop))
	for name, p := range f.policies {
		if p.Egress != EgressAllow {
			continue
		}
		for _, d := range p.Allow {
			if d.Port == 0 {
				rule(cc, out, ifInSet(f.sets[name]), daddrIn(d.Prefix), verdict(expr.VerdictReturn))
				continue
			}
			for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
				rule(cc, out, ifInSet(f.sets[name]), daddrIn(d.Prefix), l4proto(proto), dport(d.Port), verdict(expr.VerdictReturn))
			}
		}
	}
	for _, b := range Blocked {
		rule(cc, out, daddrIn(b), verdict(expr.VerdictDrop))
	}
	for name, p := range f.policies {
		if p.Egress == EgressInternet {
			rule(cc, out, ifInSet(f.sets[name]), verdict(expr.VerdictReturn))
		}
	}
	rule(cc, out, verdict(expr.VerdictDrop))

	rule(cc, back, nfproto(unix.NFPROTO_IPV6), verdict(expr.VerdictDrop))
	rule(cc, back, ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictReturn))
	rule(cc, back, verdict(expr.VerdictDrop))

	if f.guard {
		// After every filter chain at priority 0: whatever no envgate
		// table marked was forwarded only because envgate turned
		// forwarding on.
		g := f.baseChain("guard", nftables.ChainHookForward, nftables.ChainTypeFilter, nftables.ChainPriorityRef(10))
		rule(cc, g, markIs(expr.CmpOpNeq, fwdMark), verdict(expr.VerdictDrop))
	}
}

// buildOutput: of the host's new connections to a sandbox, only those of
// sockets marked with DialMark (the gateway's) go through. The chain is
// of the NAT type: the kernel runs NAT chains for the first packet of a
// new connection only (what `ct state new` matched in a filter chain),
// so the host's other packets, the gateway's with its clients included,
// pay nothing for it.
func (f *Firewall) buildOutput() {
	cc := f.conn
	o := f.baseChain("output", nftables.ChainHookOutput, nftables.ChainTypeNAT, nftables.ChainPriorityNATDest)
	envConn := f.chain("env-connect")
	rule(cc, o, ifPrefix(expr.MetaKeyOIFNAME, f.ifs(), expr.CmpOpEq), jump(expr.VerdictGoto, envConn.Name))
	rule(cc, envConn, nfproto(unix.NFPROTO_IPV6), verdict(expr.VerdictDrop))
	rule(cc, envConn, markIs(expr.CmpOpNeq, DialMark), rejectAdmin())
}

// buildNAT: what a sandbox sends out of the host leaves with the host's
// address (the forward chain has already decided what may); its DNS
// queries go to the forwarder instead, if there is one.
func (f *Firewall) buildNAT() {
	cc := f.conn
	if f.dnsPort != 0 {
		pre := f.baseChain("prerouting", nftables.ChainHookPrerouting, nftables.ChainTypeNAT, nftables.ChainPriorityNATDest)
		for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			rule(cc, pre, ifPrefix(expr.MetaKeyIIFNAME, f.ifs(), expr.CmpOpEq), nfproto(unix.NFPROTO_IPV4),
				l4proto(proto), dport(53), redirectTo(f.dnsPort))
		}
	}
	post := f.baseChain("postrouting", nftables.ChainHookPostrouting, nftables.ChainTypeNAT, nftables.ChainPriorityNATSource)
	rule(cc, post, ifPrefix(expr.MetaKeyIIFNAME, f.ifs(), expr.CmpOpEq), ifPrefix(expr.MetaKeyOIFNAME, f.ifs(), expr.CmpOpNeq),
		nfproto(unix.NFPROTO_IPV4), []expr.Any{&expr.Masq{}})
}
