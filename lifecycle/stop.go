package lifecycle

import (
	"context"
	"errors"
	"sync"
	"time"
)

// crashLoopWindow: a dev server that exits on its own within this long
// of getting ready counts as one more consecutive failure (backoff grows);
// one that ran longer starts the count afresh.
const crashLoopWindow = 10 * time.Second

// supervise waits for proc to exit. An exit while the env is Ready (not
// one we asked for) marks the env Failed; the next Acquire restarts it.
func (m *Manager) supervise(e *env, proc *process) {
	<-proc.exited
	e.mu.Lock()
	if e.proc != proc || e.State() != Ready {
		e.mu.Unlock()
		return // a stop of ours
	}
	sb := e.sb
	e.sb, e.proc = nil, nil
	e.stopped = make(chan struct{})
	e.setStateLocked(Stopping)
	e.mu.Unlock()

	e.log.Warn().Str("exit", proc.exitDescription()).Msg("dev server exited on its own")
	m.releaseSlot(e)
	if err := m.cfg.Network.Destroy(sb); err != nil {
		e.log.Error().Err(err).Msg("destroy sandbox")
	}
	proc.release(e.log)

	e.mu.Lock()
	if time.Since(e.readyAt) > crashLoopWindow {
		e.failures = 0 // it ran fine for a while: a fresh crash
	}
	e.failures++
	se := &StartError{Env: e.name, Reason: "dev server " + proc.exitDescription(), Tail: e.out.Tail(tailLines)}
	if e.failures > 1 {
		se.RetryAt = time.Now().Add(backoff(e.failures))
	}
	e.failure = se
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
	m.mu.Unlock()
	if e == nil {
		return false
	}
	return m.stop(e, reason, true)
}

// stop takes e from Ready to Stopped. Unless force, it gives up when
// anything is in flight. It returns whether it stopped e.
func (m *Manager) stop(e *env, reason string, force bool) bool {
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
	e.sb, e.proc = nil, nil
	e.stopped = make(chan struct{})
	e.mu.Unlock()

	began := time.Now()
	if m.cfg.BeforeStop != nil {
		m.cfg.BeforeStop(e.name, *e.addr.Load())
	}
	proc.stop(e.tmpl.StopGrace)
	// The dev server is dead: its MaxEnvs slot is free for a start that
	// evicted it, which need not wait for the namespace's teardown.
	m.releaseSlot(e)
	if err := m.cfg.Network.Destroy(sb); err != nil {
		e.log.Error().Err(err).Msg("destroy sandbox")
	}
	proc.release(e.log)

	e.mu.Lock()
	e.failures = 0 // stopped on purpose: its next start is a fresh one
	e.setStateLocked(Stopped)
	close(e.stopped)
	e.mu.Unlock()
	e.log.Info().Str("reason", reason).Str("exit", proc.exitDescription()).Dur("took", time.Since(began)).Msg("env stopped")
	m.saveStateSoon()
	return true
}

// reapLoop stops envs idle past their template's IdleTimeout or older
// than its MaxLifetime, and evicts idle envs while memory is short.
func (m *Manager) reapLoop() {
	t := time.NewTicker(m.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		m.reapIdle(time.Now())
		m.relieveMemory(4)
	}
}

// reapIdle stops, in parallel, every ready env with nothing in flight and
// either no activity for longer than its idle timeout or a life longer
// than its max lifetime.
func (m *Manager) reapIdle(now time.Time) {
	type reap struct {
		e      *env
		reason string
	}
	var due []reap
	for _, e := range m.snapshot() {
		if e.State() != Ready || e.inflight.Load() > 0 {
			continue
		}
		if idle := now.Sub(time.Unix(0, e.lastActive.Load())); idle > e.tmpl.IdleTimeout {
			due = append(due, reap{e, "idle for " + idle.Round(time.Millisecond).String()})
			continue
		}
		if max := e.tmpl.MaxLifetime; max > 0 {
			e.mu.Lock()
			age := now.Sub(e.readyAt)
			e.mu.Unlock()
			if age > max {
				due = append(due, reap{e, "max_lifetime: up for " + age.Round(time.Second).String()})
			}
		}
	}
	// Idle teardowns are not urgent: a few at a time, so that reaping a
	// crowd of envs at once (SIGTERM, their shutdowns, namespace deletion)
	// does not take the CPU from the envs still serving.
	var wg sync.WaitGroup
	turns := make(chan struct{}, reapParallel)
	for _, r := range due {
		turns <- struct{}{}
		wg.Go(func() {
			defer func() { <-turns }()
			m.stop(r.e, r.reason, false)
		})
	}
	wg.Wait()
	m.forgetStale(now)
}

// reapParallel is how many idle envs the reaper stops at once.
const reapParallel = 2

// errForgotten tells Acquire that the entry it holds was dropped.
var errForgotten = errors.New("lifecycle: env entry dropped; look it up again")

// forgetStale drops the entries of envs that are not running, have
// nothing in flight, and saw no activity for their idle timeout, so that
// requests for ever new names do not grow the manager without bound. A
// failed env is kept until its backoff ends, to keep the backoff.
func (m *Manager) forgetStale(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, e := range m.envs {
		if e.inflight.Load() > 0 || now.Sub(time.Unix(0, e.lastActive.Load())) <= e.tmpl.IdleTimeout {
			continue
		}
		e.mu.Lock()
		switch st := e.State(); {
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
		var wg sync.WaitGroup
		for _, e := range envs {
			wg.Go(func() { m.stop(e, "shutdown", true) })
		}
		wg.Wait()
		m.supWG.Wait()
		m.stateWG.Wait()
		m.removeCgroupParent()
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
