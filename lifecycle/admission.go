package lifecycle

import (
	"context"
	"fmt"
	"runtime"
	"time"
)

// Limits bound what a Manager runs at once. A start that would pass
// MaxEnvs or MinAvailableMemory first evicts idle envs, least recently
// used first; when nothing can be evicted it fails at once with a
// *CapacityError. Starts beyond MaxStarting queue for their turn.
type Limits struct {
	// MaxEnvs caps envs starting, running or stopping; 0 means no cap.
	MaxEnvs int
	// MaxStarting caps starts in progress at once (from sandbox creation
	// to ready); default 2 × CPUs. Further starts wait for a turn, at
	// most their template's start timeout.
	MaxStarting int
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
}

// admit gives e one of the MaxEnvs slots and checks the memory floor,
// evicting idle envs to make room. It never waits for a busy env.
func (m *Manager) admit(e *env) error {
	lim := m.cfg.Limits
	for attempt := 0; ; attempt++ {
		m.admitMu.Lock()
		why, detail := m.pressureLocked()
		if why == "" {
			m.running++
			e.holdsSlot.Store(true)
			m.admitMu.Unlock()
			return nil
		}
		m.admitMu.Unlock()
		v := m.victim(e, why == "min_available_memory")
		// Bound the loop: victims that turn busy between the choice and
		// the stop, or a memory floor no eviction can reach, end it.
		if v == nil || attempt > lim.MaxEnvs+16 {
			e.log.Warn().Str("limit", why).Str("detail", detail).Msg("start refused: at capacity, nothing idle to evict")
			return &CapacityError{Env: e.name, Limit: why, Detail: detail, RetryAfter: capacityRetryAfter}
		}
		// Wait until the victim's dev server is dead, not for its
		// namespace's teardown, which goes on in the background.
		m.admitMu.Lock()
		freed := m.slotFreed
		m.admitMu.Unlock()
		stopped := make(chan bool, 1)
		m.supWG.Go(func() { stopped <- m.stop(v, "evicted: "+why+" (to start "+e.name+")", false, false) })
		select {
		case <-freed:
		case <-stopped: // false: it turned busy; choose again
		}
	}
}

// pressureLocked names the limit a new start would pass, if any; m.admitMu
// must be held.
func (m *Manager) pressureLocked() (limit, detail string) {
	lim := m.cfg.Limits
	if lim.MaxEnvs > 0 && m.running >= lim.MaxEnvs {
		return "max_envs", fmt.Sprintf("%d envs running, the limit", m.running)
	}
	if lim.MinAvailableMemory > 0 {
		avail, err := m.cfg.AvailableMemory()
		if err != nil {
			m.log.Warn().Err(err).Msg("cannot read available memory; admitting")
			return "", ""
		}
		if avail < lim.MinAvailableMemory {
			return "min_available_memory", fmt.Sprintf("%d MiB available, below the %d MiB floor", avail>>20, lim.MinAvailableMemory>>20)
		}
	}
	return "", ""
}

// releaseSlot returns e's MaxEnvs slot once e is torn down. Idempotent.
func (m *Manager) releaseSlot(e *env) {
	if e.holdsSlot.CompareAndSwap(true, false) {
		m.admitMu.Lock()
		m.running--
		close(m.slotFreed)
		m.slotFreed = make(chan struct{})
		m.admitMu.Unlock()
	}
}

// victim picks the env to evict: ready, nothing in flight, not except.
// When memory is the pressure, the one using the most memory (as its
// cgroup counts it), else the one with the oldest activity.
func (m *Manager) victim(except *env, byMemory bool) *env {
	var best *env
	var bestActive, bestMem int64
	for _, e := range m.snapshot() {
		if e == except || e.State() != Ready || e.inflight.Load() > 0 {
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
	return best
}

// memoryUsage is the memory e's cgroup counts, or -1 when unknown.
func (e *env) memoryUsage() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proc == nil || e.proc.cg == nil {
		return -1
	}
	return e.proc.cg.memoryUsage()
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

// waitStartTurn waits for one of the MaxStarting turns, at most the
// template's start timeout. The caller calls the returned release.
func (m *Manager) waitStartTurn(e *env) (release func(), err error) {
	select {
	case m.startTurns <- struct{}{}:
		return func() { <-m.startTurns }, nil
	default:
	}
	ctx, cancel := context.WithTimeout(m.ctx, e.tmpl.Ready.Timeout)
	defer cancel()
	select {
	case m.startTurns <- struct{}{}:
		return func() { <-m.startTurns }, nil
	case <-ctx.Done():
		if m.ctx.Err() != nil {
			return nil, ErrClosed
		}
		return nil, &CapacityError{Env: e.name, Limit: "max_starting",
			Detail:     fmt.Sprintf("%d starts in progress and the queue did not move within %s", cap(m.startTurns), e.tmpl.Ready.Timeout),
			RetryAfter: capacityRetryAfter}
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
		v := m.victim(nil, true)
		if v == nil {
			return
		}
		m.stop(v, fmt.Sprintf("evicted: min_available_memory (%d MiB available)", avail>>20), false, false)
	}
}
