package netns

import (
	"net/netip"
	"sync"
	"time"
)

// addrCacheFor is how long a dump of the host's addresses answers
// allocation checks. Dumping every address at each Create cost a cold
// start time and garbage in proportion to the envs already running (each
// has an address on the host): at 1,000 envs it was most of the
// gateway's allocations and 15% of its CPU in a start burst. Slots this
// manager holds are skipped through the pool itself; the dump only finds
// addresses others put in our pool's range, which a second gateway with
// an overlapping pool or an administrator does rarely, and the kernel
// has no cheap way to ask "any address in this /30?".
const addrCacheFor = time.Second

// addrCache holds the host's IPv4 addresses that overlap the pool, from
// the last dump.
type addrCache struct {
	mu    sync.Mutex
	at    time.Time      // guarded by mu; when addrs was dumped
	addrs []netip.Prefix // guarded by mu; address and its subnet length
}

// addrTaken reports whether any root-namespace interface carries an
// address inside slot's /30, or a subnet that holds the slot (another
// instance's pool, or the administrator's), as of a dump at most
// addrCacheFor old.
func (m *Manager) addrTaken(s Slot) bool {
	p := s.Prefix()
	for _, a := range m.addrs.get(m.pool.Prefix()) {
		if p.Contains(a.Addr()) {
			return true
		}
		// Our /30 inside someone's larger subnet is a clash too.
		if a.Bits() < 30 && a.Masked().Contains(s.Host) {
			return true
		}
	}
	return false
}

// get returns the addresses overlapping pool, dumping them again when
// the last dump is too old. A failed dump counts as none: the kernel
// rejects a real clash at AddrAdd anyway.
func (c *addrCache) get(pool netip.Prefix) []netip.Prefix {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) < addrCacheFor {
		return c.addrs
	}
	addrs, err := addrList()
	if err != nil {
		return nil
	}
	c.addrs = c.addrs[:0]
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		if pfx := netip.PrefixFrom(ip.Unmap(), ones); pfx.Masked().Overlaps(pool) {
			c.addrs = append(c.addrs, pfx)
		}
	}
	c.at = time.Now()
	return c.addrs
}
