package lifecycle

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// crashLoopWindow: a dev server that exits on its own within this long
// of getting ready counts as one more consecutive failure (backoff grows);
// one that ran longer starts the count afresh.
const crashLoopWindow = 10 * time.Second

// supervise waits for proc to exit. An exit while the env is Ready (not
// one we asked for) marks the env Failed; the next Acquire restarts it.
func (m *Manager) supervise(e *env, proc Process) {
	<-proc.Exited()
	e.mu.Lock()
	if e.proc != proc || e.State() != Ready {
		e.mu.Unlock()
		return // a stop of ours
	}
	sb := e.sb
	e.sb, e.proc, e.record = nil, nil, nil
	e.stopped = make(chan struct{})
	e.setStateLocked(Stopping)
	e.mu.Unlock()

	e.log.Warn().Str("exit", proc.ExitDescription()).Msg("dev server exited on its own")
	m.observer().Stopped(e.name, StopCrashed)
	m.releaseSlot(e)
	if m.cfg.BeforeStop != nil {
		m.cfg.BeforeStop(e.name, *e.addr.Load())
	}
	if err := m.cfg.Network.Destroy(sb); err != nil {
		e.log.Error().Err(err).Msg("destroy sandbox")
	}
	proc.Release()
	m.release(e)

	e.mu.Lock()
	if time.Since(e.readyAt) > crashLoopWindow {
		e.failures = 0 // it ran fine for a while: a fresh crash
	}
	e.failures++
	se := &StartError{Env: e.name, Reason: "dev server " + proc.ExitDescription(), Tail: e.out.Tail(tailLines)}
	if e.failures > 1 {
		se.RetryAt = time.Now().Add(backoff(e.failures))
	}
	e.failure = se
	e.lastActive.Store(time.Now().UnixNano()) // as in failStart
	close(e.stopped)
	e.setStateLocked(Failed)
	e.mu.Unlock()
	m.saveStateSoon()
}

// Stop stops env name if it runs, whatever its activity, and waits for it.
// It reports whether there was something to stop.
func (m *Manager) Stop(name, reason string) bool {
	m.mu.Lock()
	e := m.envs[name]
	if !m.closed {
		// Close waits for it (supWG) before it settles the network.
		m.supWG.Add(1)
		defer m.supWG.Done()
	}
	m.mu.Unlock()
	if e == nil {
		return false
	}
	return m.stop(e, reason, true, false)
}

// stop takes e from Ready to Stopped. Unless force, it gives up when
// anything is in flight. With nice, the dev server shuts down at the
// lowest CPU priority (nobody waits for it). It returns whether it
// stopped e.
func (m *Manager) stop(e *env, reason string, force, nice bool) bool {
	e.mu.Lock()
	if e.State() != Ready {
		e.mu.Unlock()
		return false
	}
	e.setStateLocked(Stopping)
	// tryLease increments before it checks the state; we check inflight
	// after we changed the state, so a lease in the making is seen here.
	if !force && e.inflight.Load() > 0 {
		e.setStateLocked(Ready)
		e.mu.Unlock()
		return false
	}
	sb, proc := e.sb, e.proc
	e.sb, e.proc, e.record = nil, nil, nil
	e.stopped = make(chan struct{})
	e.mu.Unlock()

	began := time.Now()
	if m.cfg.BeforeStop != nil {
		m.cfg.BeforeStop(e.name, *e.addr.Load())
	}
	stopProcess(proc, e.tmpl.StopGrace, nice)
	// The dev server is dead: its MaxEnvs slot is free for a start that
	// evicted it, which need not wait for the namespace's teardown.
	m.releaseSlot(e)
	if err := m.cfg.Network.Destroy(sb); err != nil {
		e.log.Error().Err(err).Msg("destroy sandbox")
	}
	proc.Release()
	// Before the stop is seen to end: a start that waits for it then
	// claims the env anew, after the release.
	m.release(e)

	e.mu.Lock()
	e.failures = 0 // stopped on purpose: its next start is a fresh one
	e.setStateLocked(Stopped)
	close(e.stopped)
	e.mu.Unlock()
	e.log.Info().Str("reason", reason).Str("exit", proc.ExitDescription()).Dur("took", time.Since(began)).Msg("env stopped")
	m.observer().Stopped(e.name, StopCause(reason))
	m.saveStateSoon()
	return true
}

// reapLoop stops envs idle past their template's IdleTimeout or older
// than its MaxLifetime (paced: a pass may take a while), and memoryLoop,
// beside it, evicts idle envs while memory is short, unhindered by that.
func (m *Manager) reapLoop() {
	m.everyReapInterval(func() { m.reapIdle(time.Now()) })
}

func (m *Manager) memoryLoop() {
	m.everyReapInterval(func() { m.relieveMemory(4) })
}

// everyReapInterval runs fn every Config.ReapInterval until m closes.
func (m *Manager) everyReapInterval(fn func()) {
	t := time.NewTicker(m.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}

// reapIdle stops ready envs with nothing in flight and either no activity
// for longer than their idle timeout or a life longer than their max
// lifetime. Idle teardowns are not urgent, and each costs the machine a
// few milliseconds of CPU (the dev server's exit, the kernel's namespace
// cleanup), so they are paced: at most reapRate a second, a few at a
// time, and no more per pass than fit in one ReapInterval (the rest wait
// for the next pass, which also sees whether they are still due). Reaping
// a crowd of idle envs then does not take the CPUs from envs still
// serving. Evictions under memory pressure (memoryLoop) or for admission
// are not paced.
func (m *Manager) reapIdle(now time.Time) {
	var due []*env
	for _, e := range m.snapshot() {
		if _, ok := reapReason(e, now); ok {
			due = append(due, e)
		}
	}
	slices.SortFunc(due, func(a, b *env) int { return cmp.Compare(a.lastActive.Load(), b.lastActive.Load()) })
	budget := max(1, int(m.cfg.ReapInterval/reapGap))
	var wg sync.WaitGroup
	turns := make(chan struct{}, reapParallel)
	for i, e := range due {
		if i == budget || !m.sleepUntil(m.reapNext) {
			break
		}
		m.reapNext = time.Now().Add(reapGap)
		select {
		case turns <- struct{}{}:
		case <-m.ctx.Done():
		}
		if m.ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-turns }()
			// Still due? It may have been used since the list was made.
			if reason, ok := reapReason(e, time.Now()); ok {
				m.stop(e, reason, false, true)
			}
		})
	}
	wg.Wait()
	m.forgetStale(now)
}

// reapReason says why e is due to be reaped at now, if it is.
func reapReason(e *env, now time.Time) (string, bool) {
	if e.State() != Ready || e.inflight.Load() > 0 {
		return "", false
	}
	if idle := now.Sub(time.Unix(0, e.lastActive.Load())); idle > e.tmpl.IdleTimeout {
		return "idle for " + idle.Round(time.Millisecond).String(), true
	}
	if max := e.tmpl.MaxLifetime; max > 0 {
		e.mu.Lock()
		age := now.Sub(e.readyAt)
		e.mu.Unlock()
		if age > max {
			return "max_lifetime: up for " + age.Round(time.Second).String(), true
		}
	}
	return "", false
}

// sleepUntil waits until t, or returns false when the manager closes.
func (m *Manager) sleepUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return m.ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-m.ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// reapParallel is how many idle envs the reaper stops at once; reapGap
// is the least time between two idle teardowns (reapRate a second).
const (
	reapParallel = 2
	reapRate     = 20
	reapGap      = time.Second / reapRate
)

// errForgotten tells Acquire that the entry it holds was dropped.
var errForgotten = errors.New("lifecycle: env entry dropped; look it up again")

// forgetStale drops the entries of envs that are not running, have
// nothing in flight, and saw no activity (a lease, a start that failed)
// for their idle timeout, so that requests for ever new names do not grow
// the manager without bound. A failed env is kept until its backoff ends,
// to keep the backoff.
func (m *Manager) forgetStale(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, e := range m.envs {
		if e.inflight.Load() > 0 || now.Sub(time.Unix(0, e.lastActive.Load())) <= e.tmpl.IdleTimeout {
			continue
		}
		e.mu.Lock()
		// Again, under e.mu: a start that failed since the check above
		// counts as activity (failStart), and it is over now.
		recent := now.Sub(time.Unix(0, e.lastActive.Load())) <= e.tmpl.IdleTimeout
		switch st := e.State(); {
		case recent:
		case st == Stopped, st == Failed && (e.failure == nil || !now.Before(e.failure.RetryAt)):
			if e.sb == nil && e.proc == nil && !e.inStart {
				e.forgotten = true
				delete(m.envs, name)
			}
		}
		e.mu.Unlock()
	}
}

// Close refuses new work, aborts starts in progress, stops every env and
// waits for all of it, or until ctx ends.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	envs := make([]*env, 0, len(m.envs))
	for _, e := range m.envs {
		envs = append(envs, e)
	}
	m.mu.Unlock()
	m.cancel()

	done := make(chan struct{})
	go func() {
		// Starts end quickly once m.ctx is cancelled; then every env is
		// Ready, Failed or Stopped and can be stopped.
		m.wg.Wait()
		m.stopAll(envs, "shutdown")
		m.supWG.Wait()
		m.stateWG.Wait()
		if sw, ok := m.cfg.Launcher.(Sweeper); ok {
			sw.Sweep(nil)
		}
		if s, ok := m.cfg.Network.(settler); ok {
			// Back to the caller with every veth gone, not just on its way.
			s.Settle(ctx)
		}
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
