package netns

import (
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// listenerSet is the name of the set of the gateway's listener ports;
// trackedSet of the host's ports whose connections from sandboxes stay
// tracked (DNS, the forwarder's, host ports).
const (
	listenerSet = "listeners"
	trackedSet  = "tracked"
)

// SetListenerPorts makes ports the TCP ports of the gateway's
// client-facing listeners (replacing those set before, in one
// transaction): their traffic with clients skips connection tracking.
//
// The table's NAT chains and state rules turn connection tracking on for
// every packet of the host's network namespace, and on a busy gateway
// most packets are its clients': every one then costs a conntrack lookup
// and TCP state update, and a SYN flood fills the host's conntrack
// table. The gateway never NATs that traffic and no envgate rule looks
// at its state, so it goes untracked, as on any busy public reverse
// proxy: packets of other hosts and of local processes to a local
// address on one of ports, and the host's packets from one of ports.
// Packets from and to sandboxes stay tracked (the output chain checks
// new connections to them for the gateway's mark; the gateway's own
// connections to them are exempt as Firewall says), as do forwarded
// packets (their NAT needs it). A host firewall sees the listeners' packets in state
// "untracked": one that accepts a port only in state "new" (rather than
// "new,untracked" as firewalld does, or statelessly as ufw does) would
// drop them; see docs/operations.md.
func (f *Firewall) SetListenerPorts(ports []uint16) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	ports = slices.Clone(ports)
	slices.Sort(ports)
	ports = slices.Compact(ports)
	f.conn.FlushSet(f.listeners)
	if len(ports) > 0 {
		if err := f.conn.SetAddElements(f.listeners, portElements(ports)); err != nil {
			return fmt.Errorf("netns: firewall: listener ports: %w", err)
		}
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("netns: firewall: listener ports %v: %w", ports, err)
	}
	return nil
}

func portElements(ports []uint16) []nftables.SetElement {
	elems := make([]nftables.SetElement, len(ports))
	for i, p := range ports {
		elems[i] = nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p)}
	}
	return elems
}

// carriedPorts returns the listener ports of an existing table of the
// same name: a successor's listeners are its predecessor's sockets, and
// their connections must not turn tracked (mid-stream, which a host with
// nf_conntrack_tcp_loose=0 marks invalid) until it sets them again.
func (f *Firewall) carriedPorts() []uint16 {
	s, err := f.conn.GetSetByName(f.table, listenerSet)
	if err != nil {
		return nil
	}
	elems, _ := f.conn.GetSetElements(s)
	var ports []uint16
	for _, e := range elems {
		if len(e.Key) == 2 {
			ports = append(ports, binary.BigEndian.Uint16(e.Key))
		}
	}
	return ports
}

// buildNotrack: the chains at the raw priority (before connection
// tracking) that exempt the listeners' client traffic from it (see
// SetListenerPorts) and, unless a host firewall may need its state
// (hostFirewall), the gateway's traffic with sandboxes. Every packet of
// the host passes these chains, so each rule tests its cheapest match
// first and ends the chain once it has decided.
func (f *Firewall) buildNotrack(carried []uint16) {
	cc := f.conn
	f.listeners = &nftables.Set{Table: f.table, Name: listenerSet, KeyType: nftables.TypeInetService}
	_ = cc.AddSet(f.listeners, portElements(carried)) // errors only for malformed sets; Flush reports them

	pre := f.baseChain("notrack-in", nftables.ChainHookPrerouting, nftables.ChainTypeFilter, nftables.ChainPriorityRaw)
	// Packets that arrive on lo were decided in output: they carry
	// their conntrack verdict over loopback.
	rule(cc, pre, ifIndexIs(expr.MetaKeyIIF, expr.CmpOpEq, loopbackIndex), verdict(expr.VerdictReturn))
	switch {
	case f.untrackGateway && f.pool.IsValid():
		// A sandbox's TCP to an address in the pool (its host end, or
		// another sandbox's, which the forward chain drops), but for DNS
		// and the host ports, whose connections the policy accepts
		// statefully: the gateway's connections are among these, and
		// the input chain accepts only them (by socket, after the source
		// address check). Compares of the header, no lookup of a socket.
		rule(cc, pre, nfproto(unix.NFPROTO_IPV4), daddrIn(f.pool), ifPrefix(expr.MetaKeyIIFNAME, f.ifs(), expr.CmpOpEq),
			l4proto(unix.IPPROTO_TCP), f.dportNotTracked(), notrack(), verdict(expr.VerdictReturn))
	case f.untrackGateway:
		// Without the pool: a sandbox's packets on a connection of the
		// gateway's, a TCP socket of the host with DialMark. The input
		// chain accepts them by the same test.
		rule(cc, pre, ifPrefix(expr.MetaKeyIIFNAME, f.ifs(), expr.CmpOpEq), l4proto(unix.IPPROTO_TCP),
			socketMarkIs(DialMark), notrack(), verdict(expr.VerdictReturn))
	}
	// From another host to a listener at a local address: not forwarded,
	// not a sandbox's.
	rule(cc, pre, l4proto(unix.IPPROTO_TCP), portInSet(2, f.listeners),
		ifPrefix(expr.MetaKeyIIFNAME, f.ifs(), expr.CmpOpNeq), daddrLocal(), notrack())

	out := f.baseChain("notrack-out", nftables.ChainHookOutput, nftables.ChainTypeFilter, nftables.ChainPriorityRaw)
	// A local client's packets to a listener, and the listener's
	// answers to it.
	rule(cc, out, ifIndexIs(expr.MetaKeyOIF, expr.CmpOpEq, loopbackIndex), l4proto(unix.IPPROTO_TCP),
		portInSet(2, f.listeners), notrack(), verdict(expr.VerdictReturn))
	rule(cc, out, ifIndexIs(expr.MetaKeyOIF, expr.CmpOpEq, loopbackIndex), l4proto(unix.IPPROTO_TCP),
		portInSet(0, f.listeners), notrack(), verdict(expr.VerdictReturn))
	if f.untrackGateway {
		// The gateway's packets to sandboxes (its sockets carry
		// DialMark; the output chain's check of new connections is for
		// the others, which stay tracked).
		rule(cc, out, markIs(expr.CmpOpEq, DialMark), ifPrefix(expr.MetaKeyOIFNAME, f.ifs(), expr.CmpOpEq),
			notrack(), verdict(expr.VerdictReturn))
	}
	// The listeners' answers to other hosts. (A port is never the source
	// of the host's other connections: the kernel picks no ephemeral port
	// that a socket is bound to, and a process that binds one on another
	// address still meets the output chain's mark check on its way to a
	// sandbox.)
	rule(cc, out, l4proto(unix.IPPROTO_TCP), portInSet(0, f.listeners), ifPrefix(expr.MetaKeyOIFNAME, f.ifs(), expr.CmpOpNeq), notrack())
}

// hostFirewall reports whether other software may filter what the host
// receives: a base chain on the input hook in an IPv4 or inet table that
// is not an envgate instance's (firewalld, ufw and iptables-nft, a
// hand-written ruleset, kube-proxy), or iptables' legacy filter table.
// Such firewalls accept replies by conntrack state ("ct state
// established,related accept", "--ctstate RELATED,ESTABLISHED"), and
// firewalld's and ufw's input chains drop or reject what arrives untracked on a
// port they do not open (firewalld's filter_INPUT accepts established,
// related, DNAT and lo, then hands the rest to the zone of the link,
// where an env's veth falls in the default zone): the gateway's
// connections to sandboxes must then stay tracked. A listing that fails
// counts as a firewall.
func hostFirewall(cc *nftables.Conn) bool {
	chains, err := cc.ListChains()
	if err != nil {
		return true
	}
	for _, c := range chains {
		if c.Hooknum == nil || *c.Hooknum != *nftables.ChainHookInput || strings.HasPrefix(c.Table.Name, "envgate-") {
			continue
		}
		if c.Table.Family == nftables.TableFamilyIPv4 || c.Table.Family == nftables.TableFamilyINet {
			return true
		}
	}
	b, err := os.ReadFile("/proc/net/ip_tables_names")
	return err == nil && slices.Contains(strings.Fields(string(b)), "filter")
}

// loopbackIndex is the index of lo in every network namespace.
const loopbackIndex = 1

// portInSet is `th sport @s` (offset 0) or `th dport @s` (offset 2); use
// after l4proto.
func portInSet(offset uint32, s *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: offset, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
	}
}

// dportNotTracked is `th dport != { f.tracked }`: compares, which the
// kernel runs inline, while a lookup in a set (as few as these are) costs
// a call and, on a miss, a search of its catch-all elements; a set when
// there are many. Use after l4proto.
func (f *Firewall) dportNotTracked() []expr.Any {
	e := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}}
	if len(f.tracked) > maxPortCompares {
		s := &nftables.Set{Table: f.table, Name: trackedSet, KeyType: nftables.TypeInetService}
		_ = f.conn.AddSet(s, portElements(f.tracked)) // errors only for malformed sets; Flush reports them
		return append(e, &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: true})
	}
	for _, p := range f.tracked {
		e = append(e, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)})
	}
	return e
}

// maxPortCompares is how many ports dportNotTracked compares one by one.
const maxPortCompares = 8

// ifIndexIs is `meta iif|oif <op> <index>`.
func ifIndexIs(key expr.MetaKey, op expr.CmpOp, index uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: binaryutil.NativeEndian.PutUint32(index)},
	}
}

// daddrLocal is `fib daddr type local`: the packet is for this host.
func daddrLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

func notrack() []expr.Any { return []expr.Any{&expr.Notrack{}} }

// socketMarkIs is `socket mark & markMask == v`: the packet belongs to a
// local socket with mark v. In the input hook the socket is the one the
// kernel's early demultiplexing found (no second lookup); in prerouting
// it is looked up. No socket, or a time-wait one, never matches.
func socketMarkIs(v uint32) []expr.Any {
	return []expr.Any{
		&expr.Socket{Key: expr.SocketKeyMark, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(markMask), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(v)},
	}
}
