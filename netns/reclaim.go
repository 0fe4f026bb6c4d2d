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
	reclaimEvery = 5 * time.Millisecond
	linkGrace    = 5 * time.Second
)

// pendingLink is the host end of a destroyed sandbox that the kernel has
// yet to remove.
type pendingLink struct {
	name  string
	slot  int
	since time.Time
}

type reclaimer struct {
	mu      sync.Mutex
	pending []pendingLink // guarded by mu
	running bool          // guarded by mu; the poll loop runs
	idle    chan struct{} // guarded by mu; closed when pending empties
}

// reclaim has slot released once link name is gone.
func (m *Manager) reclaim(name string, slot int) {
	r := &m.reclaimer
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending = append(r.pending, pendingLink{name: name, slot: slot, since: time.Now()})
	if r.idle == nil {
		r.idle = make(chan struct{})
	}
	if !r.running {
		r.running = true
		go m.reclaimLoop()
	}
}

func (m *Manager) reclaimLoop() {
	r := &m.reclaimer
	for {
		time.Sleep(reclaimEvery)
		r.mu.Lock()
		check := append([]pendingLink(nil), r.pending...)
		r.mu.Unlock()

		done := make(map[string]bool, len(check))
		for _, p := range check {
			gone, err := linkGone(p.name)
			if err == nil && !gone && time.Since(p.since) > linkGrace {
				// Its namespace lives on; the veth goes now.
				gone = deleteLink(p.name) == nil
			}
			if gone {
				m.pool.Release(p.slot)
				done[p.name] = true
			}
		}

		r.mu.Lock()
		keep := r.pending[:0]
		for _, p := range r.pending {
			if !done[p.name] {
				keep = append(keep, p)
			}
		}
		clear(r.pending[len(keep):])
		r.pending = keep
		if len(r.pending) == 0 {
			r.running = false
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

// linkGone reports whether no link is called name.
func linkGone(name string) (bool, error) {
	_, err := netlink.LinkByName(name)
	if err == nil {
		return false, nil
	}
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
		return true, nil
	}
	return false, err
}
