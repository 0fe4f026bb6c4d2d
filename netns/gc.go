package netns

import (
	"errors"
	"fmt"
	"os"
	"slices"
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
// all. Namespaces that a later mount of RunDir hides (an `ip netns add`
// while an older envgate ran) are uncovered first when only this prefix's
// mounts are in the way; otherwise the error wraps ErrHidden.
func (m *Manager) GC(keep map[string]bool) (Leftovers, error) {
	var left Leftovers
	var errs []error
	// Namespaces an earlier `ip netns add` hid are out of reach until
	// the layers above them go (hidden.go).
	if err := m.revealHidden(keep); err != nil {
		errs = append(errs, err)
	}
	// The host ends to remove, listed first: deleting the namespaces
	// below takes most of them along (see reclaim.go).
	kept := m.keptSlots(keep)
	links, err := m.gcLinks(kept)
	if err != nil {
		errs = append(errs, err)
	}
	ids, err := m.List()
	if err != nil {
		errs = append(errs, err)
	}
	dying := map[int]bool{} // slots of the namespaces deleted here
	for _, id := range ids {
		if keep[id] {
			continue
		}
		name := nsName(m.prefix, id)
		path := RunDir + "/" + name
		slot := -1
		if sb, err := m.inspect(id); err == nil {
			sb.Close()
			slot = sb.Slot.Index
		}
		if pids, err := PidsIn(path); err == nil {
			left.Processes += len(pids)
		}
		if err := killNamespace(path, 5*time.Second); err != nil {
			errs = append(errs, err)
		}
		if err := deleteNamed(name); err != nil {
			errs = append(errs, err)
			continue // still alive: its veth stays too, no use waiting
		}
		if slot >= 0 {
			dying[slot] = true
		}
		left.Namespaces = append(left.Namespaces, name)
	}
	// Let the kernel remove the veths of those namespaces, in one batch;
	// what outlives linkGrace (a namespace kept alive), and every link
	// without a namespace, is deleted here.
	for deadline := time.Now().Add(linkGrace); len(dying) > 0 && time.Now().Before(deadline); time.Sleep(reclaimEvery) {
		now, err := m.gcLinks(kept)
		if err != nil || !slices.ContainsFunc(now, func(name string) bool {
			slot, _ := parseHostIfName(m.prefix, name)
			return dying[slot]
		}) {
			break
		}
	}
	now, err := m.gcLinks(kept)
	if err != nil {
		errs = append(errs, err)
	}
	remaining := map[string]bool{}
	for _, name := range now {
		if err := deleteLink(name); err != nil {
			errs = append(errs, err)
			remaining[name] = true
		}
	}
	for _, name := range append(links, now...) {
		if !remaining[name] && !slices.Contains(left.Links, name) {
			left.Links = append(left.Links, name)
		}
	}
	return left, errors.Join(errs...)
}

// gcLinks lists the host links of this prefix that GC removes: veths
// whose slot is not kept.
func (m *Manager) gcLinks(kept map[int]bool) ([]string, error) {
	links, err := linkList()
	if err != nil {
		return nil, fmt.Errorf("netns: gc: list links: %w", err)
	}
	var out []string
	for _, l := range links {
		name := l.Attrs().Name
		if slot, ok := parseHostIfName(m.prefix, name); !ok || l.Type() != "veth" || kept[slot] {
			continue
		}
		out = append(out, name)
	}
	return out, nil
}

// keptSlots returns the pool slots of the sandboxes keep names: their host
// links stay. A link whose peer namespace is gone (or never existed) is
// not kept.
func (m *Manager) keptSlots(keep map[string]bool) map[int]bool {
	slots := map[int]bool{}
	for id := range keep {
		sb, err := m.inspect(id)
		if err != nil {
			continue
		}
		sb.Close()
		slots[sb.Slot.Index] = true
	}
	return slots
}

// dumpRetries bounds the retries of an interrupted dump. On a machine
// where another gateway creates and deletes thousands of links, five in a
// row were seen to fail.
const dumpRetries = 50

// dumpBackoff waits before retry i+1 of an interrupted dump: not at first,
// then a little longer each time (up to 20 ms), so that a burst of link
// changes (a start storm of another gateway, a test tearing down its
// namespaces) can pass instead of interrupting every retry in a row, as
// it did 50 times once in a test's leak check.
func dumpBackoff(i int) {
	if i >= 3 {
		time.Sleep(time.Duration(min(i, 20)) * time.Millisecond)
	}
}

// linkList dumps the root namespace's links, retrying a dump the kernel
// interrupted because the table changed underneath it.
func linkList() ([]netlink.Link, error) {
	for i := 0; ; i++ {
		links, err := netlink.LinkList()
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < dumpRetries {
			dumpBackoff(i)
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
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < dumpRetries {
			dumpBackoff(i)
			continue
		}
		return addrs, err
	}
}
