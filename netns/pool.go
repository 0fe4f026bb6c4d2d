package netns

import (
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"sync"
)

// DefaultPool is the address pool used when none is configured.
var DefaultPool = netip.MustParsePrefix("10.213.0.0/16")

// ErrPoolExhausted is returned when every /30 of the pool is taken.
var ErrPoolExhausted = errors.New("netns: address pool exhausted")

// Slot is one /30 of the pool: the host end of the veth gets .1, the
// namespace end .2.
type Slot struct {
	Index int
	Host  netip.Addr
	Peer  netip.Addr
}

// Prefix returns the /30 the slot's addresses live in.
func (s Slot) Prefix() netip.Prefix { return netip.PrefixFrom(s.Host, 30).Masked() }

// Pool hands out /30 slots of an IPv4 prefix. It never hands out a slot
// that is allocated, and it skips slots whose addresses some interface on
// the host already carries (checked by the inUse callback at allocation).
type Pool struct {
	base netip.Addr
	size int

	mu   sync.Mutex
	used map[int]bool // guarded by mu
	next int          // guarded by mu; where the next search starts
}

// NewPool returns a pool over prefix, which must be IPv4 and at least a /30.
func NewPool(prefix netip.Prefix) (*Pool, error) {
	if !prefix.IsValid() || !prefix.Addr().Is4() {
		return nil, fmt.Errorf("netns: pool %s: want an IPv4 prefix", prefix)
	}
	if prefix.Bits() > 30 {
		return nil, fmt.Errorf("netns: pool %s: want /30 or larger (one /30 per environment)", prefix)
	}
	return &Pool{
		base: prefix.Masked().Addr(),
		size: 1 << (30 - prefix.Bits()),
		used: make(map[int]bool),
	}, nil
}

// Prefix is the pool's address range.
func (p *Pool) Prefix() netip.Prefix {
	return netip.PrefixFrom(p.base, 30-bits.Len(uint(p.size))+1)
}

// Size is the number of slots in the pool.
func (p *Pool) Size() int { return p.size }

// Slot returns the addresses of slot i.
func (p *Pool) Slot(i int) Slot {
	b := p.base.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i) * 4
	host := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v + 1)})
	peer := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v + 2)})
	return Slot{Index: i, Host: host, Peer: peer}
}

// Allocate reserves the lowest free slot at or after the last allocation
// (wrapping around), skipping any for which taken reports true. taken may be
// nil. Allocation round-robins rather than reusing the slot just released,
// so a late packet for a destroyed env does not reach its successor.
func (p *Pool) Allocate(taken func(Slot) bool) (Slot, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for n := 0; n < p.size; n++ {
		i := (p.next + n) % p.size
		if p.used[i] {
			continue
		}
		s := p.Slot(i)
		if taken != nil && taken(s) {
			continue
		}
		p.used[i] = true
		p.next = (i + 1) % p.size
		return s, nil
	}
	return Slot{}, ErrPoolExhausted
}

// Reserve marks slot i used, for slots found already in use (adopted or
// left over). It reports false when i is outside the pool or already used.
func (p *Pool) Reserve(i int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i < 0 || i >= p.size || p.used[i] {
		return false
	}
	p.used[i] = true
	return true
}

// Release returns slot i to the pool. Releasing a free slot is a no-op.
func (p *Pool) Release(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.used, i)
}

// InUse is the number of allocated slots.
func (p *Pool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.used)
}

// indexOf returns the slot whose /30 holds ip.
func (p *Pool) indexOf(ip []byte) (int, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return 0, false
	}
	a = a.Unmap()
	if !a.Is4() {
		return 0, false
	}
	b, x := p.base.As4(), a.As4()
	base := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v := uint32(x[0])<<24 | uint32(x[1])<<16 | uint32(x[2])<<8 | uint32(x[3])
	if v < base || int((v-base)/4) >= p.size {
		return 0, false
	}
	return int((v - base) / 4), true
}
