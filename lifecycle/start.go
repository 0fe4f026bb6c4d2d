package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"runtime/debug"
	"time"
)

// start brings e to Ready, or to Failed with a *StartError. It runs once
// per env at a time (singleflight) on a context detached from any request.
func (m *Manager) start(e *env) (err error) {
	defer func() {
		if r := recover(); r != nil {
			e.log.Error().Interface("panic", r).Bytes("stack", debug.Stack()).Msg("start panicked")
			err = &StartError{Env: e.name, Reason: fmt.Sprintf("internal error: %v", r)}
			e.mu.Lock()
			starting := e.State() == Starting
			if starting {
				e.failure = err.(*StartError)
				e.setStateLocked(Failed)
			}
			e.mu.Unlock()
			if starting {
				m.releaseSlot(e)
				m.release(e)
			}
		}
	}()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	m.wg.Add(1)
	m.mu.Unlock()
	defer m.wg.Done()

	for {
		e.mu.Lock()
		if e.forgotten {
			e.mu.Unlock()
			return errForgotten
		}
		switch e.State() {
		case Ready:
			e.mu.Unlock()
			return nil
		case Stopping:
			ch := e.stopped
			e.mu.Unlock()
			<-ch
			continue
		case Failed:
			if f := e.failure; f != nil && time.Now().Before(f.RetryAt) {
				e.mu.Unlock()
				cp := *f
				cp.Tail = e.out.Tail(tailLines)
				return &cp
			}
		}
		break
	}
	prev := e.State()
	// The queue and admission run without e.mu: inStart keeps
	// forgetStale from dropping the entry meanwhile.
	e.inStart = true
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.inStart = false
		e.mu.Unlock()
	}()

	// Until it begins, the start is the state Starting without a sandbox:
	// it waits for a turn (MaxStarting), then for a MaxEnvs slot and the
	// memory floor, all within the template's start timeout, and it is
	// dropped if every caller waiting for it goes meanwhile.
	if err := m.refusal(e); err != nil {
		m.observeRefusal(e, err)
		e.log.Warn().Err(err).Msg("start refused: at capacity, nothing idle to evict")
		return err
	}
	e.mu.Lock()
	e.setStateLocked(Starting)
	e.startedAt = time.Now()
	e.mu.Unlock()
	endTurn, err := m.beginStart(e)
	if err != nil {
		m.observeRefusal(e, err)
		e.mu.Lock()
		e.setStateLocked(prev)
		e.mu.Unlock()
		if errors.Is(err, errStartDropped) {
			e.log.Info().Msg("start dropped before it began: nobody waits for it")
		}
		return err
	}
	defer endTurn()

	defer m.warm.refill()
	launchAt := time.Now()
	if err := m.claimWithin(e); err != nil {
		// Owned by another node, or no word from etcd: nothing was made.
		m.releaseSlot(e)
		e.mu.Lock()
		e.setStateLocked(prev)
		e.mu.Unlock()
		e.log.Warn().Err(err).Msg("start refused: this node does not own the env")
		return err
	}
	sb, proc, sandboxAt, err := m.launch(e)
	if err != nil {
		return m.failStart(e, sb, proc, err)
	}
	spawnedAt := time.Now()
	// The ready timeout counts from the spawn: the checkout and its
	// prepare steps before it had their own (PrepareTimeout).
	ctx, cancel := context.WithTimeoutCause(m.ctx, e.tmpl.Ready.Timeout, errStartTimeout)
	defer cancel()
	addr := netip.AddrPortFrom(sb.Addr(), uint16(e.tmpl.Port))
	if err := proc.WaitReady(ctx, addr, e.tmpl.Ready); err != nil {
		return m.failStart(e, sb, proc, err)
	}

	e.mu.Lock()
	e.sb, e.proc, e.record = sb, proc, nil
	e.addr.Store(&addr)
	// failures is not reset here: a server that crashes soon after it
	// got ready is crash-looping (see supervise).
	e.failure = nil
	e.readyAt = time.Now()
	e.madeDataDir = false
	e.lastActive.Store(e.readyAt.UnixNano())
	took := e.readyAt.Sub(e.startedAt)
	e.setStateLocked(Ready)
	e.mu.Unlock()
	setup, boot := spawnedAt.Sub(launchAt), e.readyAt.Sub(spawnedAt)
	// The phases of took: sandbox (made, or a warm one taken: its
	// firewall policy included), then spawn (data dir, checkout, cgroup,
	// the dev server's fork), then boot (until the probe succeeded).
	e.log.Info().Str("addr", addr.String()).Int("pid", proc.Pid()).Dur("took", took).
		Dur("sandbox", sandboxAt.Sub(launchAt)).Dur("spawn", spawnedAt.Sub(sandboxAt)).Dur("boot", boot).Msg("env ready")
	m.observer().Started(e.name, StartPhases{Wait: max(took-setup-boot, 0), Setup: setup, Boot: boot})
	m.saveStateSoon()
	m.supWG.Go(func() { m.supervise(e, proc) })
	return nil
}

// claimWithin claims e (Config.Ownership) within the ready timeout.
func (m *Manager) claimWithin(e *env) error {
	ctx, cancel := context.WithTimeoutCause(m.ctx, e.tmpl.Ready.Timeout, errStartTimeout)
	defer cancel()
	_, err := m.claim(ctx, e)
	return err
}

// beginStart waits for e's turn and admission. On success e holds a
// MaxEnvs slot and the caller calls endTurn when the start is over.
func (m *Manager) beginStart(e *env) (endTurn func(), err error) {
	ctx, cancel := context.WithTimeout(m.ctx, e.tmpl.Ready.Timeout)
	defer cancel()
	ctx, stopWatch := m.whileWanted(ctx, e)
	defer stopWatch()
	if endTurn, err = m.waitStartTurn(ctx, e); err != nil {
		return nil, err
	}
	if err = m.admit(ctx, e); err != nil {
		endTurn()
		return nil, err
	}
	stopWatch()
	if context.Cause(ctx) == errStartDropped {
		m.releaseSlot(e)
		endTurn()
		return nil, errStartDropped
	}
	return endTurn, nil
}

var errStartTimeout = errors.New("start timed out")

// launch makes the sandbox and the data dir, and has the launcher start
// the dev server in them. Making the sandbox is bounded by the ready
// timeout; the checkout and its prepare steps, which the launcher runs
// first, by the prepare timeout (the launcher's to apply). On error it
// returns what it made so far, for failStart to remove, and when the
// sandbox was there.
func (m *Manager) launch(e *env) (_ Sandbox, _ Process, sandboxAt time.Time, _ error) {
	ctx, cancel := context.WithTimeoutCause(m.ctx, e.tmpl.Ready.Timeout, errStartTimeout)
	defer cancel()
	sb := m.warm.take(e.name)
	if sb == nil {
		var err error
		if sb, err = m.cfg.Network.Create(ctx, e.name); err != nil {
			return nil, nil, sandboxAt, fmt.Errorf("create sandbox: %w", err)
		}
	}
	sandboxAt = time.Now()
	// 0700: one env's data is not another's, nor other local users'.
	if _, err := os.Lstat(e.dataDir); errors.Is(err, fs.ErrNotExist) {
		e.mu.Lock()
		e.madeDataDir = e.readyAt.IsZero()
		e.mu.Unlock()
	}
	if err := os.MkdirAll(e.dataDir, 0o700); err != nil {
		return sb, nil, sandboxAt, fmt.Errorf("data dir: %w", err)
	}
	proc, err := m.cfg.Launcher.Launch(m.ctx, LaunchRequest{Env: e.name, Template: e.tmpl, DataDir: e.dataDir,
		Sandbox: sb, Output: e.out, Updating: e.setUpdating, Fence: e.claimed(), Log: e.log})
	if err != nil {
		return sb, nil, sandboxAt, err
	}
	return sb, proc, sandboxAt, nil
}

// failStart removes what a failed start made, records the failure with
// its backoff, and returns it.
func (m *Manager) failStart(e *env, sb Sandbox, proc Process, cause error) error {
	if proc != nil {
		stopProcess(proc, e.tmpl.StopGrace, false)
	}
	if sb != nil {
		if err := m.cfg.Network.Destroy(sb); err != nil {
			e.log.Error().Err(err).Msg("destroy sandbox after failed start")
		}
	}
	if proc != nil {
		proc.Release()
	}
	m.releaseSlot(e)
	m.release(e)
	se := &StartError{Env: e.name, Err: cause}
	var pe *PrepareError
	switch {
	case errors.Is(cause, errStartTimeout):
		se.Timeout = true
		se.Err = nil
		se.Reason = fmt.Sprintf("not ready within %s (is it listening on port %d?)", e.tmpl.Ready.Timeout, e.tmpl.Port)
	case errors.Is(cause, ErrExited) && proc != nil:
		se.Err = nil
		se.Reason = "dev server " + proc.ExitDescription() + " before it was ready"
	case errors.Is(cause, context.Canceled):
		se.Reason = "gateway shutting down"
	case errors.As(cause, &pe):
		se.Reason = cause.Error()
		se.Timeout = pe.TimedOut
	default:
		se.Reason = "could not start"
	}
	se.Tail = e.out.Tail(tailLines)

	e.mu.Lock()
	if e.madeDataDir && e.readyAt.IsZero() {
		// An env that never became ready keeps no data dir: a stranger's
		// random names, or a broken template's, fill no disk or inodes
		// (its dev server is dead, its sandbox gone). A data dir that was
		// there before this gateway's first start of it is never removed.
		if err := os.RemoveAll(e.dataDir); err != nil {
			e.log.Warn().Err(err).Msg("remove data dir of an env that never became ready")
		} else {
			e.madeDataDir = false
		}
	}
	e.failures++
	if e.failures > 1 {
		se.RetryAt = time.Now().Add(backoff(e.failures))
	}
	e.failure = se
	// A start is activity: forgetStale keeps the entry, and with it the
	// count of failures the backoff grows with, for the idle timeout.
	e.lastActive.Store(time.Now().UnixNano())
	e.setStateLocked(Failed)
	failures := e.failures
	e.mu.Unlock()
	e.log.Warn().Str("reason", se.Reason).AnErr("cause", se.Err).Int("failures", failures).Msg("env start failed")
	m.observer().StartFailed(e.name, se.Timeout)
	return se
}

// backoff is the wait after the n-th consecutive failure (n >= 2): 1s,
// 2s, 4s, ... up to a minute. The first failure may be retried at once.
func backoff(n int) time.Duration {
	d := time.Second << min(n-2, 6)
	return min(d, time.Minute)
}

// tailLines is how many lines of output a StartError carries.
const tailLines = 40
