package netns

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Adopt takes over the existing sandbox for id, left by an earlier run of
// the same instance: it opens the namespace, reads the slot back from the
// address inside, checks the host end, and reserves the slot. A sandbox
// that is incomplete is an error; GC it instead.
func (m *Manager) Adopt(id string) (*Sandbox, error) {
	sb, err := m.inspect(id)
	if err != nil {
		return nil, err
	}
	if _, err := netlink.LinkByName(sb.HostIf); err != nil {
		sb.Close()
		return nil, fmt.Errorf("netns: adopt %s: host end %s: %w", sb.Name, sb.HostIf, err)
	}
	if !m.pool.Reserve(sb.Slot.Index) {
		sb.Close()
		return nil, fmt.Errorf("netns: adopt %s: slot %d already in use", sb.Name, sb.Slot.Index)
	}
	sb.count()
	return sb, nil
}

// inspect opens the namespace for id and derives its slot from the address
// on PeerIfName. It reserves nothing.
func (m *Manager) inspect(id string) (*Sandbox, error) {
	if err := validateID(id); err != nil {
		return nil, err
	}
	name := nsName(m.prefix, id)
	h, err := netns.GetFromPath(RunDir + "/" + name)
	if err != nil {
		return nil, fmt.Errorf("netns: open %s: %w", name, err)
	}
	sb := &Sandbox{ID: id, Name: name, handle: h}
	inner, err := netlink.NewHandleAt(h)
	if err != nil {
		sb.Close()
		return nil, fmt.Errorf("netns: open %s: netlink: %w", name, err)
	}
	defer inner.Close()
	link, err := inner.LinkByName(PeerIfName)
	if err != nil {
		sb.Close()
		return nil, fmt.Errorf("netns: open %s: %s: %w", name, PeerIfName, err)
	}
	addrs, err := inner.AddrList(link, netlink.FAMILY_V4)
	if err != nil || len(addrs) == 0 {
		sb.Close()
		return nil, fmt.Errorf("netns: open %s: no address on %s (%v)", name, PeerIfName, err)
	}
	idx, ok := m.pool.indexOf(addrs[0].IP)
	if !ok {
		sb.Close()
		return nil, fmt.Errorf("netns: open %s: address %s is outside the pool", name, addrs[0].IP)
	}
	sb.Slot = m.pool.Slot(idx)
	sb.HostIf = hostIfName(m.prefix, idx)
	return sb, nil
}

// Close releases the sandbox's namespace handle without destroying
// anything. Start and Do fail afterwards; Destroy still works.
func (s *Sandbox) Close() {
	if s.handle.IsOpen() {
		s.handle.Close()
	}
	s.handle = netns.None()
}
