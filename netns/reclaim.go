package netns

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Teardown is batched by the kernel: Destroy deletes the namespace, and
// the kernel's namespace cleanup (cleanup_net) takes the veth pair with
// it, unregistering the devices of every namespace that died meanwhile
// in one batch, behind one RCU grace period. Deleting the host end
// ourselves (RTM_DELLINK) would instead cost one grace period per env:
// about 35 ms each on a small VM, all of it holding the RTNL lock that
// cold starts need.
//
// Until the host end is gone its name and addresses are still taken, so
// the sandbox's slot goes back to the pool only then: a reclaimer polls
// for the links of destroyed sandboxes and releases their slots. A link
// that outlives linkGrace (its namespace kept alive by something Destroy
// could not kill) is deleted by hand.

const (
	reclaimEvery = 10 * time.Millisecond
	linkGrace    = 5 * time.Second
	// reclaimGiveUp drops an entry whose link could not be removed: its
	// slot stays taken (the next start-up's GC removes the link).
	reclaimGiveUp = 30 * time.Second
)

// pendingLink is the host end of a destroyed sandbox that the kernel has
// yet to remove. It is known by its ifindex, which the kernel does not
// hand out again soon, not by its name, which the slot's next sandbox
// (of this process, or of the next one after a handoff) may take.
type pendingLink struct {
	seq   uint64
	name  string
	index int
	slot  int
	since time.Time
}

type reclaimer struct {
	mu      sync.Mutex
	seq     uint64        // guarded by mu; numbers pending entries
	pending []pendingLink // guarded by mu
	// idle is closed when pending empties; guarded by mu. It is not nil
	// exactly while the poll loop runs.
	idle chan struct{}
}

// reclaim has slot released once the link name (ifindex index) is gone.
func (m *Manager) reclaim(name string, index, slot int) {
	r := &m.reclaimer
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	r.pending = append(r.pending, pendingLink{seq: r.seq, name: name, index: index, slot: slot, since: time.Now()})
	if r.idle == nil {
		r.idle = make(chan struct{})
		go m.reclaimLoop()
	}
}

// reclaimLoop runs while links are pending: a look at them every
// reclaimEvery, backing off while netlink fails. Every entry leaves within
// reclaimGiveUp, so the loop ends.
func (m *Manager) reclaimLoop() {
	r := &m.reclaimer
	wait := reclaimEvery
	for {
		time.Sleep(wait)
		r.mu.Lock()
		check := append([]pendingLink(nil), r.pending...)
		r.mu.Unlock()

		names, err := linkNamesOf(check)
		if err != nil {
			wait = min(wait*2, time.Second)
		} else {
			wait = reclaimEvery
		}
		done := make(map[uint64]bool, len(check))
		for _, p := range check {
			age := time.Since(p.since)
			switch {
			case err == nil && names[p.index] != p.name:
				// Gone, or its index now names another link.
				m.pool.Release(p.slot)
				done[p.seq] = true
			case err == nil && age > linkGrace:
				// Its namespace lives on; the veth goes now.
				if deleteLinkAt(p.index, p.name) == nil {
					m.pool.Release(p.slot)
					done[p.seq] = true
				}
			}
			if !done[p.seq] && age > reclaimGiveUp {
				done[p.seq] = true // the slot stays taken
			}
		}

		r.mu.Lock()
		keep := r.pending[:0]
		for _, p := range r.pending {
			if !done[p.seq] {
				keep = append(keep, p)
			}
		}
		clear(r.pending[len(keep):])
		r.pending = keep
		if len(r.pending) == 0 {
			close(r.idle)
			r.idle = nil
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
	}
}

// Settle waits until the host links of every destroyed sandbox are gone
// (the kernel removes them shortly after Destroy), or ctx ends.
func (m *Manager) Settle(ctx context.Context) error {
	r := &m.reclaimer
	r.mu.Lock()
	idle := r.idle
	r.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// linkNamesOf maps the indexes of the pending links to the names of the
// links that have them now (none: gone). A few are asked about one by
// one; for more, one dump of all links is cheaper.
func linkNamesOf(pending []pendingLink) (map[int]string, error) {
	if len(pending) <= 8 {
		names := make(map[int]string, len(pending))
		for _, p := range pending {
			l, err := netlink.LinkByIndex(p.index)
			if err != nil {
				var nf netlink.LinkNotFoundError
				if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
					continue
				}
				return nil, err
			}
			names[p.index] = l.Attrs().Name
		}
		return names, nil
	}
	links, err := linkList()
	if err != nil {
		return nil, err
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	return names, nil
}

// deleteLinkAt deletes link index if it is still called name; a link gone
// is success.
func deleteLinkAt(index int, name string) error {
	l, err := netlink.LinkByIndex(index)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil
		}
		return err
	}
	if l.Attrs().Name != name {
		return nil
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}
