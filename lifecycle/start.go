package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/envgate/envgate/netns"
)

// Probe pacing: a check every millisecond for the first probeTightFor
// (a refused connect costs microseconds), then gaps growing by half up to
// probeMaxGap, so a dev server that boots in 5 ms is seen within a
// millisecond, and a slow one costs few probes.
const (
	probeFirstGap = time.Millisecond
	probeTightFor = 100 * time.Millisecond
	probeMaxGap   = 50 * time.Millisecond
	// probeOutputGap bounds probes prompted by output, so a server that
	// floods its output while it boots is not probed in a loop.
	probeOutputGap = 500 * time.Microsecond
	// probeFreeOutput is how many lines of output prompt a probe with no
	// wait at all: a dev server says a few things while it boots, the
	// last of them often that it listens.
	probeFreeOutput = 16
	tailLines       = 40
)

// probeDialTimeout bounds one probe's connect. Over a local veth a
// connect is answered in microseconds, by the server or by a reset; a SYN
// lost while the sandbox settles would otherwise wait for TCP's 1s
// retransmission.
const probeDialTimeout = 100 * time.Millisecond

var probeClient = &http.Client{
	Transport: &http.Transport{
		DisableKeepAlives: true,
		Proxy:             nil,
		DialContext:       (&net.Dialer{Timeout: probeDialTimeout, Control: netns.MarkSocket}).DialContext,
	},
	// A probe must not follow a redirect off to somewhere else.
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

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
	sb, proc, err := m.launch(e)
	if err != nil {
		return m.failStart(e, sb, proc, err)
	}
	spawnedAt := time.Now()
	// The ready timeout counts from the spawn: the checkout and its
	// prepare steps before it had their own (PrepareTimeout).
	ctx, cancel := context.WithTimeoutCause(m.ctx, e.tmpl.Ready.Timeout, errStartTimeout)
	defer cancel()
	// The dev server boots at a lower CPU priority and gets the normal one
	// once it is ready: in a start storm, envs already serving keep the
	// CPUs; on a quiet machine nothing competes and nothing slows.
	setGroupNice(proc.Pid(), bootNice)
	addr := netip.AddrPortFrom(sb.Addr(), uint16(e.tmpl.Port))
	if err := probe(ctx, addr, e.tmpl.Ready.HTTPPath, proc.exited, proc.lines); err != nil {
		return m.failStart(e, sb, proc, err)
	}
	setGroupNice(proc.Pid(), 0)

	e.mu.Lock()
	e.sb, e.proc = sb, proc
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
	e.log.Info().Str("addr", addr.String()).Int("pid", proc.Pid()).Dur("took", took).Msg("env ready")
	setup, boot := spawnedAt.Sub(launchAt), time.Since(spawnedAt)
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

// bootNice is the nice value of a dev server's process group while it
// boots: a CFS weight of about a tenth of a serving process's.
const bootNice = 10

// setGroupNice sets the nice value of every thread in process group pgid.
// A failure costs only the priority: it is ignored.
func setGroupNice(pgid, nice int) { _ = syscall.Setpriority(syscall.PRIO_PGRP, pgid, nice) }

var (
	errStartTimeout = errors.New("start timed out")
	errExited       = errors.New("dev server exited before it was ready")
)

// launch makes the sandbox, brings the checkout up to date and spawns
// the dev server. Making the sandbox is bounded by the ready timeout, the
// checkout and its prepare steps by the prepare timeout. On error it
// returns what it made so far, for failStart to remove.
func (m *Manager) launch(e *env) (Sandbox, *process, error) {
	ctx, cancel := context.WithTimeoutCause(m.ctx, e.tmpl.Ready.Timeout, errStartTimeout)
	defer cancel()
	sb := m.warm.take(e.name)
	if sb == nil {
		var err error
		if sb, err = m.cfg.Network.Create(ctx, e.name); err != nil {
			return nil, nil, fmt.Errorf("create sandbox: %w", err)
		}
	}
	// 0700: one env's data is not another's, nor other local users'.
	if _, err := os.Lstat(e.dataDir); errors.Is(err, fs.ErrNotExist) {
		e.mu.Lock()
		e.madeDataDir = e.readyAt.IsZero()
		e.mu.Unlock()
	}
	if err := os.MkdirAll(e.dataDir, 0o700); err != nil {
		return sb, nil, fmt.Errorf("data dir: %w", err)
	}
	cred, err := m.ownDataDir(e)
	if err != nil {
		return sb, nil, fmt.Errorf("data dir: %w", err)
	}
	checkout, err := m.checkout(e, sb, cred)
	if err != nil {
		return sb, nil, err
	}
	x, err := e.tmpl.expand(Vars{Name: e.name, Port: e.tmpl.Port, DataDir: e.dataDir, Checkout: checkout})
	if err != nil {
		return sb, nil, fmt.Errorf("template %s: %w", e.tmpl.Name, err)
	}
	if x.dir == "" {
		x.dir = e.dataDir
	}
	m.runAs(&x, cred, e, sb)
	base := e.baseEnv()
	var cg envCgroup
	if m.cfg.CgroupParent != "" {
		if cg, err = newCgroup(m.cfg.CgroupParent, e.name, e.tmpl.cgroupResources()); err != nil {
			if e.tmpl.Resources.any() {
				return sb, nil, err // its limits cannot be enforced
			}
			e.log.Warn().Err(err).Msg("no cgroup for the env: its memory use is unknown to eviction")
			cg = nil
		}
	}
	proc, err := spawn(sb, x, base, cg, e.out, e.log.With().Str("stream", "output").Logger())
	if err != nil {
		if cg != nil {
			cg.remove()
		}
		return sb, nil, fmt.Errorf("spawn %s: %w", x.argv[0], err)
	}
	e.log.Debug().Int("pid", proc.Pid()).Strs("argv", x.argv).Str("addr", sb.Addr().String()).Msg("dev server spawned")
	return sb, proc, nil
}

// failStart removes what a failed start made, records the failure with
// its backoff, and returns it.
func (m *Manager) failStart(e *env, sb Sandbox, proc *process, cause error) error {
	if proc != nil {
		proc.stop(e.tmpl.StopGrace, false)
	}
	if sb != nil {
		if err := m.cfg.Network.Destroy(sb); err != nil {
			e.log.Error().Err(err).Msg("destroy sandbox after failed start")
		}
	}
	if proc != nil {
		proc.release(e.log)
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
	case errors.Is(cause, errExited):
		se.Err = nil
		se.Reason = "dev server " + proc.exitDescription() + " before it was ready"
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

// probe polls addr until the dev server answers, it exits, or ctx ends.
// Besides its pace, it probes at once when the server writes a line of
// output (lines), at most every probeOutputGap: dev servers tend to say
// when they listen ("ready", "listening on"), so the wait for a server
// that boots in 5 ms ends with its message rather than the next tick.
func probe(ctx context.Context, addr netip.AddrPort, httpPath string, exited <-chan struct{}, lines <-chan struct{}) error {
	return defaultPace.probe(ctx, addr, httpPath, exited, lines)
}

// probePace is the pace of probe: see the constants.
type probePace struct {
	first, tightFor, max, output time.Duration
	freeOutput                   int
}

var defaultPace = probePace{first: probeFirstGap, tightFor: probeTightFor, max: probeMaxGap, output: probeOutputGap, freeOutput: probeFreeOutput}

func (pp probePace) probe(ctx context.Context, addr netip.AddrPort, httpPath string, exited <-chan struct{}, lines <-chan struct{}) error {
	gap, began := pp.first, time.Now()
	free := pp.freeOutput // output lines that may prompt a probe at once
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	for {
		select {
		case <-exited:
			return errExited
		default:
		}
		if probeOnce(ctx, addr, httpPath) == nil {
			return nil
		}
		last := time.Now()
		t.Reset(gap)
	wait:
		for {
			select {
			case <-exited:
				return errExited
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-t.C:
				break wait
			case <-lines:
				// The first few lines of output prompt a probe at once;
				// after them, a line does so at most every pp.output
				// while the pace is tight, then every half gap, counted
				// from the last probe's end: a server that floods its
				// output while it boots gets at most about twice the
				// probes of one that says nothing.
				minGap := pp.output
				if time.Since(began) > pp.tightFor {
					minGap = max(minGap, gap/2)
				}
				if free > 0 || time.Since(last) >= minGap {
					free--
					t.Stop()
					break wait
				}
			}
		}
		if time.Since(began) > pp.tightFor {
			gap = min(gap*3/2, pp.max)
		}
	}
}

func probeOnce(ctx context.Context, addr netip.AddrPort, httpPath string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if httpPath == "" {
		// Marked as the gateway's own: the firewall rejects the rest.
		d := net.Dialer{Timeout: probeDialTimeout, Control: netns.MarkSocket}
		c, err := d.DialContext(ctx, "tcp", addr.String())
		if err != nil {
			return err
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr.String()+httpPath, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "envgate-probe")
	resp, err := probeClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("probe: status %d", resp.StatusCode)
	}
	return nil
}

// baseEnv is the environment every process of e starts with (the dev
// server and its prepare steps), before the template's own variables.
func (e *env) baseEnv() []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	return []string{
		"PATH=" + path,
		"HOME=" + e.dataDir,
		"PORT=" + strconv.Itoa(e.tmpl.Port),
		"ENVGATE_ENV=" + e.name,
		"ENVGATE_DATA_DIR=" + e.dataDir,
	}
}
