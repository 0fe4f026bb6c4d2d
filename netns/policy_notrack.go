package netns

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// listenerSet is the name of the set of the gateway's listener ports.
const listenerSet = "listeners"

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
// Packets from and to sandboxes stay tracked (the input chain accepts
// their replies to the gateway by state, and the output chain checks the
// gateway's mark on new connections), as do forwarded packets (their
// NAT needs it). A host firewall sees the listeners' packets in state
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
// tracking) that exempt the listeners' client traffic from it; see
// SetListenerPorts. Each rule tests the set first, so other packets pay
// one lookup.
func (f *Firewall) buildNotrack(carried []uint16) {
	cc := f.conn
	f.listeners = &nftables.Set{Table: f.table, Name: listenerSet, KeyType: nftables.TypeInetService}
	_ = cc.AddSet(f.listeners, portElements(carried)) // errors only for malformed sets; Flush reports them

	// Arriving from another host (a local client's packets were
	// decided in output: they carry their conntrack verdict over
	// loopback), to a local address: not forwarded, not a sandbox's.
	pre := f.baseChain("notrack-in", nftables.ChainHookPrerouting, nftables.ChainTypeFilter, nftables.ChainPriorityRaw)
	rule(cc, pre, l4proto(unix.IPPROTO_TCP), portInSet(2, f.listeners), ifIndexIs(expr.MetaKeyIIF, expr.CmpOpNeq, loopbackIndex),
		ifPrefix(expr.MetaKeyIIFNAME, f.ifs(), expr.CmpOpNeq), daddrLocal(), notrack())

	out := f.baseChain("notrack-out", nftables.ChainHookOutput, nftables.ChainTypeFilter, nftables.ChainPriorityRaw)
	// The listeners' answers, to anyone but a sandbox. (A port is never
	// the source of the host's other connections: the kernel picks no
	// ephemeral port that a socket is bound to, and a process that binds
	// one on another address still meets the output chain's mark check
	// on its way to a sandbox.)
	rule(cc, out, l4proto(unix.IPPROTO_TCP), portInSet(0, f.listeners), ifPrefix(expr.MetaKeyOIFNAME, f.ifs(), expr.CmpOpNeq), notrack())
	// A local client's packets to a listener.
	rule(cc, out, l4proto(unix.IPPROTO_TCP), portInSet(2, f.listeners), ifIndexIs(expr.MetaKeyOIF, expr.CmpOpEq, loopbackIndex), notrack())
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
