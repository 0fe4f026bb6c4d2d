package netns

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/vishvananda/netlink"
)

// Leftovers is what GC found and removed.
type Leftovers struct {
	Namespaces []string // namespace names removed
	Links      []string // host veth ends removed
	Processes  int      // processes killed inside those namespaces
}

// Empty reports whether nothing was left behind.
func (l Leftovers) Empty() bool {
	return len(l.Namespaces) == 0 && len(l.Links) == 0 && l.Processes == 0
}

// List returns the IDs of the namespaces that carry this manager's prefix.
func (m *Manager) List() ([]string, error) {
	ents, err := os.ReadDir(RunDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netns: list: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if id, ok := idFromNsName(m.prefix, e.Name()); ok {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// GC removes every namespace, host veth end and process that carries this
// manager's prefix and that keep does not name. Use it at start-up (keep =
// nil, or the sandboxes being adopted) and from `envgate gc`. It touches
// nothing of another prefix. It continues past failures and reports them
// all.
func (m *Manager) GC(keep map[string]bool) (Leftovers, error) {
	var left Leftovers
	var errs []error
	ids, err := m.List()
	if err != nil {
		errs = append(errs, err)
	}
	for _, id := range ids {
		if keep[id] {
			continue
		}
		name := nsName(m.prefix, id)
		path := RunDir + "/" + name
		if pids, err := PidsIn(path); err == nil {
			left.Processes += len(pids)
		}
		if err := killNamespace(path, 5*time.Second); err != nil {
			errs = append(errs, err)
		}
		if err := deleteNamed(name); err != nil {
			errs = append(errs, err)
			continue
		}
		left.Namespaces = append(left.Namespaces, name)
	}
	links, err := linkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("netns: gc: list links: %w", err))
	}
	for _, l := range links {
		name := l.Attrs().Name
		if _, ok := parseHostIfName(m.prefix, name); !ok || l.Type() != "veth" {
			continue
		}
		if m.linkKept(l, keep) {
			continue
		}
		if err := deleteLink(name); err != nil {
			errs = append(errs, err)
			continue
		}
		left.Links = append(left.Links, name)
	}
	return left, errors.Join(errs...)
}

// linkKept reports whether host link l belongs to a kept sandbox: its peer
// lives in a namespace whose ID is in keep. A link whose peer namespace is
// gone (or never existed) is not kept.
func (m *Manager) linkKept(l netlink.Link, keep map[string]bool) bool {
	if len(keep) == 0 {
		return false
	}
	slot, _ := parseHostIfName(m.prefix, l.Attrs().Name)
	for id := range keep {
		sb, err := m.inspect(id)
		if err != nil {
			continue
		}
		sb.Close()
		if sb.Slot.Index == slot {
			return true
		}
	}
	return false
}

// linkList dumps the root namespace's links, retrying a dump the kernel
// interrupted because the table changed underneath it.
func linkList() ([]netlink.Link, error) {
	for i := 0; ; i++ {
		links, err := netlink.LinkList()
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < 5 {
			continue
		}
		return links, err
	}
}

// addrList dumps the root namespace's IPv4 addresses, retrying interrupted
// dumps.
func addrList() ([]netlink.Addr, error) {
	for i := 0; ; i++ {
		addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < 5 {
			continue
		}
		return addrs, err
	}
}
