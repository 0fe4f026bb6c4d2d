package lifecycle

import (
	"sync"
	"time"
)

// Stopping every env at once (Close). Stopping them one by one, or each
// on its own goroutine with its own teardown, made a shutdown take time in
// proportion to the envs: each teardown scanned /proc for the processes
// in its namespace, and a thousand of them ran at once. Here the envs
// share each phase: every process group gets SIGTERM, then one grace
// period runs for all of them, stragglers get SIGKILL, and the sandboxes
// go in one batch (BatchNetwork), so stopping N envs takes about the
// grace period plus the kernel's teardown.

// BatchNetwork is a Network that removes many sandboxes at once more
// cheaply than one by one.
type BatchNetwork interface {
	Network
	// DestroyAll is Destroy for every sandbox of sbs.
	DestroyAll(sbs []Sandbox) error
}

// releaseParallel bounds the goroutines that release stopped envs'
// cgroups and output pipes at shutdown.
const releaseParallel = 16

// stopping is an env that stopAll takes down.
type stopping struct {
	e    *env
	sb   Sandbox
	proc Process
}

// stopAll stops every env of envs that is Ready, together, and returns
// when all are Stopped.
func (m *Manager) stopAll(envs []*env, reason string) {
	var all []stopping
	for _, e := range envs {
		e.mu.Lock()
		if e.State() != Ready {
			e.mu.Unlock()
			continue
		}
		e.setStateLocked(Stopping)
		all = append(all, stopping{e, e.sb, e.proc})
		e.sb, e.proc, e.record = nil, nil, nil
		e.stopped = make(chan struct{})
		e.mu.Unlock()
	}
	if len(all) == 0 {
		return
	}
	began := time.Now()
	for _, s := range all {
		if m.cfg.BeforeStop != nil {
			m.cfg.BeforeStop(s.e.name, *s.e.addr.Load())
		}
		s.proc.Terminate()
	}
	// One grace period for all: each env's own, counted from the same
	// moment.
	for _, s := range all {
		if d := time.Until(began.Add(s.e.tmpl.StopGrace)); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-s.proc.Exited():
			case <-t.C:
			}
			t.Stop()
		}
		// The group may outlive its leader: kill it either way.
		s.proc.Kill()
	}
	for _, s := range all {
		<-s.proc.Exited()
		m.releaseSlot(s.e)
	}
	signalled := time.Now()

	sbs := make([]Sandbox, len(all))
	for i, s := range all {
		sbs[i] = s.sb
	}
	if bn, ok := m.cfg.Network.(BatchNetwork); ok {
		if err := bn.DestroyAll(sbs); err != nil {
			m.log.Error().Err(err).Msg("destroy sandboxes")
		}
	} else {
		m.forEach(len(all), func(i int) {
			if err := m.cfg.Network.Destroy(all[i].sb); err != nil {
				all[i].e.log.Error().Err(err).Msg("destroy sandbox")
			}
		})
	}
	destroyed := time.Now()

	m.forEach(len(all), func(i int) {
		s := all[i]
		s.proc.Release()
		s.e.mu.Lock()
		s.e.failures = 0
		s.e.setStateLocked(Stopped)
		close(s.e.stopped)
		s.e.mu.Unlock()
		s.e.log.Info().Str("reason", reason).Str("exit", s.proc.ExitDescription()).Msg("env stopped")
	})
	m.log.Info().Int("envs", len(all)).Dur("processes", signalled.Sub(began)).Dur("sandboxes", destroyed.Sub(signalled)).
		Dur("took", time.Since(began)).Msg("stopped every env")
	m.saveStateSoon()
}

// forEach runs fn(0) ... fn(n-1) on at most releaseParallel goroutines
// and returns when all have returned.
func (m *Manager) forEach(n int, fn func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(n, releaseParallel) {
		wg.Go(func() {
			for i := range next {
				fn(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}
