package lifecycle

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"
)

// Limits bound what a Manager runs at once. A start that would pass
// MaxEnvs or MinAvailableMemory first evicts idle envs, least recently
// used first; when nothing is idle and nothing is on its way out it fails
// at once with a *CapacityError. Starts beyond MaxStarting queue for
// their turn, at most MaxQueuedStarts of them.
type Limits struct {
	// MaxEnvs caps envs starting, running or stopping; 0 means no cap.
	MaxEnvs int
	// MaxStarting caps starts in progress at once (from sandbox creation
	// to ready); default 2 × CPUs. Further starts wait for a turn, at
	// most their template's start timeout.
	MaxStarting int
	// MaxQueuedStarts caps starts waiting for one of the MaxStarting
	// turns; a start past it is refused at once (*CapacityError, limit
	// max_queued_starts). Default 4 × MaxStarting.
	MaxQueuedStarts int
	// MinAvailableMemory, in bytes, is the floor of available memory
	// (see SystemAvailableMemory) below which idle envs are evicted and
	// starts refused; 0 disables the check.
	MinAvailableMemory int64
}

// capacityRetryAfter is the Retry-After hint of a refused start: about
// the time a busy env takes to finish a request or a start to complete.
const capacityRetryAfter = 2 * time.Second

func (l *Limits) setDefaults() {
	if l.MaxStarting <= 0 {
		l.MaxStarting = 2 * runtime.NumCPU()
	}
	if l.MaxQueuedStarts <= 0 {
		l.MaxQueuedStarts = 4 * l.MaxStarting
	}
}

// slotWaiter is a start waiting for a MaxEnvs slot: as the heir of an env
// it evicts (env.heir), or in the queue of starts that wait for the slot
// of an env already on its way out (Manager.slotQueue).
type slotWaiter struct {
	e       *env
	granted chan struct{} // closed when e holds the slot
	done    bool          // guarded by Manager.admitMu; granted, or gave up
}

// grantLocked hands a slot to w; m.admitMu must be held.
func (w *slotWaiter) grantLocked() {
	w.done = true
	w.e.holdsSlot.Store(true)
	close(w.granted)
}

// admit gives e one of the MaxEnvs slots and checks the memory floor,
// evicting idle envs to make room, as many as e needs and no more. It
// waits for the slot of an env being evicted or stopped when that is all
// there is, until ctx ends; it refuses at once (*CapacityError) when
// nothing is idle and nothing is on its way out. It never waits for a
// busy env. On a nil error e holds a slot.
func (m *Manager) admit(ctx context.Context, e *env) error {
	if err := m.takeSlot(ctx, e); err != nil {
		return err
	}
	if err := m.makeMemoryRoom(ctx, e); err != nil {
		m.releaseSlot(e)
		return err
	}
	return nil
}

// takeSlot gets e a MaxEnvs slot. A slot freed by an env that e evicts is
// handed to e (the victim's heir), not to whichever start asks first, and
// a slot freed by an env stopped for any other reason goes to the oldest
// start in the queue: so concurrent starts at the cap each evict one env.
func (m *Manager) takeSlot(ctx context.Context, e *env) error {
	limit := m.cfg.Limits.MaxEnvs
	for attempt := 0; ; attempt++ {
		m.admitMu.Lock()
		if limit <= 0 || m.running < limit {
			m.running++
			e.holdsSlot.Store(true)
			m.admitMu.Unlock()
			return nil
		}
		m.admitMu.Unlock()

		// Scan without the lock (it reads every env), then decide with it.
		v, leaving := m.victim(e, false)
		w := &slotWaiter{e: e, granted: make(chan struct{})}
		m.admitMu.Lock()
		switch {
		case m.running < limit:
			m.admitMu.Unlock()
			continue // a slot freed meanwhile
		case v != nil && attempt <= limit+16 && v.holdsSlot.Load() && v.heir.CompareAndSwap(nil, w):
			// v's slot is e's once v's dev server is dead.
		case v != nil && attempt <= limit+16:
			// Another start chose v between the scan and the lock, or v
			// left: the scan is stale (leaving with it), look again.
			m.admitMu.Unlock()
			continue
		case leaving > len(m.slotQueue):
			m.slotQueue = append(m.slotQueue, w)
			v = nil
		default:
			// Nothing idle, and every env on its way out already has a
			// start waiting for its slot. (The attempt bound ends a loop
			// of victims that turn busy between the choice and the stop.)
			m.admitMu.Unlock()
			e.log.Warn().Str("limit", "max_envs").Int("running", limit).Msg("start refused: at capacity, nothing idle to evict")
			return &CapacityError{Env: e.name, Limit: "max_envs", RetryAfter: capacityRetryAfter,
				Detail: fmt.Sprintf("%d envs running, the limit, none of them idle", limit)}
		}
		m.admitMu.Unlock()

		var stopped chan bool
		if v != nil {
			stopped = make(chan bool, 1)
			m.supWG.Go(func() { stopped <- m.stop(v, "evicted: max_envs (to start "+e.name+")", false, false) })
		}
		select {
		case <-w.granted:
			return nil
		case <-stopped:
			// It turned busy (false), or its slot is ours (true): the
			// hand-over happened before stop returned.
		case <-ctx.Done():
		}
		if m.giveUpSlot(w, v) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return m.admitCancelled(ctx, e, "max_envs")
		}
	}
}

// giveUpSlot withdraws w from its victim v (or from the queue when v is
// nil) and reports whether the slot was granted already.
func (m *Manager) giveUpSlot(w *slotWaiter, v *env) (granted bool) {
	m.admitMu.Lock()
	defer m.admitMu.Unlock()
	if w.done {
		return true
	}
	w.done = true
	if v != nil {
		v.heir.CompareAndSwap(w, nil)
	} else {
		m.slotQueue = slices.DeleteFunc(m.slotQueue, func(x *slotWaiter) bool { return x == w })
	}
	return false
}

// admitCancelled is the error of an admission cut short by ctx: the
// manager closing, the start dropped, or its wait over.
func (m *Manager) admitCancelled(ctx context.Context, e *env, limit string) error {
	switch cause := context.Cause(ctx); {
	case m.ctx.Err() != nil:
		return ErrClosed
	case cause == errStartDropped:
		return cause
	default:
		return &CapacityError{Env: e.name, Limit: limit, RetryAfter: capacityRetryAfter,
			Detail: fmt.Sprintf("no room was made within %s", e.tmpl.Ready.Timeout)}
	}
}

// makeMemoryRoom evicts idle envs, the largest first and one at a time,
// while available memory is below the floor.
func (m *Manager) makeMemoryRoom(ctx context.Context, e *env) error {
	floor := m.cfg.Limits.MinAvailableMemory
	if floor <= 0 {
		return nil
	}
	for attempt := 0; ; attempt++ {
		avail, err := m.cfg.AvailableMemory()
		if err != nil {
			m.log.Warn().Err(err).Msg("cannot read available memory; admitting")
			return nil
		}
		if avail >= floor {
			return nil
		}
		v, _ := m.victim(e, true)
		// Bound the loop: victims that turn busy between the choice and
		// the stop, or a floor no eviction reaches, end it.
		if v == nil || attempt > 16+m.cfg.Limits.MaxEnvs {
			detail := fmt.Sprintf("%d MiB available, below the %d MiB floor", avail>>20, floor>>20)
			e.log.Warn().Str("limit", "min_available_memory").Str("detail", detail).Msg("start refused: at capacity, nothing idle to evict")
			return &CapacityError{Env: e.name, Limit: "min_available_memory", Detail: detail, RetryAfter: capacityRetryAfter}
		}
		stopped := make(chan bool, 1)
		m.supWG.Go(func() {
			stopped <- m.stop(v, fmt.Sprintf("evicted: min_available_memory (%d MiB available, to start %s)", avail>>20, e.name), false, false)
		})
		select {
		case <-stopped: // stopped, or busy: look again
		case <-ctx.Done():
			return m.admitCancelled(ctx, e, "min_available_memory")
		}
	}
}

// refusal is the *CapacityError that admit would return at once for e,
// if any: nothing idle to evict and no slot on its way. It claims
// nothing, so that a start refused anyway is refused before it queues
// for a turn.
func (m *Manager) refusal(e *env) error {
	lim := m.cfg.Limits
	if lim.MaxEnvs > 0 {
		m.admitMu.Lock()
		full, queued := m.running >= lim.MaxEnvs, len(m.slotQueue)
		m.admitMu.Unlock()
		if full {
			if v, leaving := m.victim(e, false); v == nil && leaving <= queued {
				return &CapacityError{Env: e.name, Limit: "max_envs", RetryAfter: capacityRetryAfter,
					Detail: fmt.Sprintf("%d envs running, the limit, none of them idle", lim.MaxEnvs)}
			}
		}
	}
	if lim.MinAvailableMemory > 0 {
		avail, err := m.cfg.AvailableMemory()
		if err == nil && avail < lim.MinAvailableMemory {
			if v, _ := m.victim(e, true); v == nil {
				return &CapacityError{Env: e.name, Limit: "min_available_memory", RetryAfter: capacityRetryAfter,
					Detail: fmt.Sprintf("%d MiB available, below the %d MiB floor", avail>>20, lim.MinAvailableMemory>>20)}
			}
		}
	}
	return nil
}

// releaseSlot gives up e's MaxEnvs slot once its dev server is dead: to
// the start that evicted e, else to the oldest start waiting for a slot,
// else back to the pool. Idempotent.
func (m *Manager) releaseSlot(e *env) {
	if !e.holdsSlot.CompareAndSwap(true, false) {
		return
	}
	m.admitMu.Lock()
	defer m.admitMu.Unlock()
	if w := e.heir.Swap(nil); w != nil && !w.done {
		w.grantLocked()
		return
	}
	for len(m.slotQueue) > 0 {
		w := m.slotQueue[0]
		m.slotQueue = m.slotQueue[1:]
		if !w.done {
			w.grantLocked()
			return
		}
	}
	m.running--
}

// victim picks the env to evict: ready, nothing in flight, no Acquire
// call still to take its lease from the start that just made it ready,
// not except, not already being evicted for another start. When memory is the
// pressure, the one using the most memory (as its cgroup counts it), else
// the one with the oldest activity. leaving counts the envs on their way
// out whose slot no start has claimed: a start may wait for one of them.
func (m *Manager) victim(except *env, byMemory bool) (best *env, leaving int) {
	var bestActive, bestMem int64
	for _, e := range m.snapshot() {
		if e == except || e.heir.Load() != nil {
			continue
		}
		switch e.State() {
		case Stopping:
			if e.holdsSlot.Load() {
				leaving++
			}
			continue
		case Ready:
		default:
			continue
		}
		if e.inflight.Load() > 0 || e.awaited() {
			continue
		}
		a, mem := e.lastActive.Load(), int64(-1)
		if byMemory {
			mem = e.memoryUsage()
		}
		if best == nil || mem > bestMem || mem == bestMem && a < bestActive {
			best, bestActive, bestMem = e, a, mem
		}
	}
	return best, leaving
}

// memoryUsage is the memory e's dev server uses, or -1 when unknown.
func (e *env) memoryUsage() int64 {
	e.mu.Lock()
	proc := e.proc
	e.mu.Unlock()
	if proc == nil {
		return -1
	}
	mem, _ := proc.Usage()
	return mem
}

// snapshot returns every env the manager knows of.
func (m *Manager) snapshot() []*env {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*env, 0, len(m.envs))
	for _, e := range m.envs {
		out = append(out, e)
	}
	return out
}

// waitStartTurn waits for one of the MaxStarting turns until ctx ends (the
// template's start timeout, or nobody waiting for the start any more). At
// most MaxQueuedStarts starts wait; one more is refused at once. The
// caller calls the returned release.
func (m *Manager) waitStartTurn(ctx context.Context, e *env) (release func(), err error) {
	select {
	case m.startTurns <- struct{}{}:
		return func() { <-m.startTurns }, nil
	default:
	}
	lim := m.cfg.Limits
	if n := m.queuedStarts.Add(1); n > int64(lim.MaxQueuedStarts) {
		m.queuedStarts.Add(-1)
		// Debug: in a storm this is most requests for new envs.
		e.log.Debug().Str("limit", "max_queued_starts").Int("queued", lim.MaxQueuedStarts).Msg("start refused: start queue full")
		return nil, &CapacityError{Env: e.name, Limit: "max_queued_starts", RetryAfter: capacityRetryAfter,
			Detail: fmt.Sprintf("%d starts in progress and %d more waiting, the limit", lim.MaxStarting, lim.MaxQueuedStarts)}
	}
	defer m.queuedStarts.Add(-1)
	select {
	case m.startTurns <- struct{}{}:
		return func() { <-m.startTurns }, nil
	case <-ctx.Done():
		if m.ctx.Err() != nil {
			return nil, ErrClosed
		}
		if cause := context.Cause(ctx); cause == errStartDropped {
			return nil, cause
		}
		return nil, &CapacityError{Env: e.name, Limit: "max_starting", RetryAfter: capacityRetryAfter,
			Detail: fmt.Sprintf("%d starts in progress and the queue did not move within %s", lim.MaxStarting, e.tmpl.Ready.Timeout)}
	}
}

// relieveMemory evicts idle envs while available memory is below the
// floor, at most max of them per call (the reaper calls it every tick).
func (m *Manager) relieveMemory(max int) {
	floor := m.cfg.Limits.MinAvailableMemory
	if floor <= 0 {
		return
	}
	for range max {
		avail, err := m.cfg.AvailableMemory()
		if err != nil || avail >= floor {
			return
		}
		v, _ := m.victim(nil, true)
		if v == nil {
			return
		}
		m.stop(v, fmt.Sprintf("evicted: min_available_memory (%d MiB available)", avail>>20), false, false)
	}
}
