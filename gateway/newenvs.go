package gateway

import (
	"net/netip"
	"sync"
	"time"
)

// NewEnvLimit bounds how many envs each client address may bring into
// being: a token bucket per address, of Burst tokens refilled at Burst
// per Per, one taken by each request for an env the gateway does not
// know yet (see EnvKnower). Requests for envs it knows, running or not,
// take nothing. Safe for concurrent use; share one between the HTTP
// handler and the TCP listeners.
type NewEnvLimit struct {
	burst    float64
	per      time.Duration
	local    bool // applies on localhost domains too
	now      func() time.Time
	mu       sync.Mutex
	buckets  map[netip.Addr]*bucket // guarded by mu
	lastTrim time.Time              // guarded by mu
}

type bucket struct {
	tokens float64
	at     time.Time
}

// maxBuckets bounds the addresses remembered; past it, the full buckets
// (clients that have made nothing for a while) are forgotten.
const maxBuckets = 65536

// NewNewEnvLimit returns a limit of n first-time starts per per for each
// client address. With onLocalhost false it does not apply to requests
// for localhost domains, where the only clients are the developer and
// their tools.
func NewNewEnvLimit(n int, per time.Duration, onLocalhost bool) *NewEnvLimit {
	return &NewEnvLimit{burst: float64(n), per: per, local: onLocalhost, now: time.Now, buckets: map[netip.Addr]*bucket{}}
}

// EnvKnower is what the limit needs of the lifecycle manager:
// *lifecycle.Manager implements it.
type EnvKnower interface {
	// Known reports whether env name has an entry (running, starting,
	// stopped or failed), without making one.
	Known(name string) bool
	// Allowed reports whether a start of env name could run: a name no
	// template or source allows is refused anyway, and takes no token.
	Allowed(name string) error
}

// counts reports whether a request for env from a client counts against
// l: l applies to the domain, and env is new and could start.
func (l *NewEnvLimit) counts(k EnvKnower, env string, local bool) bool {
	return l.applies(local) && k != nil && !k.Known(env) && k.Allowed(env) == nil
}

// applies reports whether the limit counts requests for a domain that is
// a localhost one if local.
func (l *NewEnvLimit) applies(local bool) bool { return l != nil && (l.local || !local) }

// take takes a token for client, or returns how long until one is there.
func (l *NewEnvLimit) take(client netip.Addr) time.Duration {
	now := l.now()
	rate := l.burst / float64(l.per) // tokens per nanosecond
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[client]
	if !ok {
		if len(l.buckets) >= maxBuckets {
			l.trimLocked(now, rate)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[client] = b
	}
	b.tokens = min(l.burst, b.tokens+float64(now.Sub(b.at))*rate)
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration((1 - b.tokens) / rate)
}

// trimLocked forgets the buckets that have refilled. l.mu must be held.
func (l *NewEnvLimit) trimLocked(now time.Time, rate float64) {
	if now.Sub(l.lastTrim) < time.Second {
		return
	}
	l.lastTrim = now
	for a, b := range l.buckets {
		if b.tokens+float64(now.Sub(b.at))*rate >= l.burst {
			delete(l.buckets, a)
		}
	}
}
