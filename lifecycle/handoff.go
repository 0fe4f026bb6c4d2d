package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// HandedEnv is a running env passed from one gateway process to the next
// during a zero-downtime restart (see Manager.Handoff and TakeOver). The
// files travel as open descriptors (inherited or SCM_RIGHTS), the rest as
// JSON.
type HandedEnv struct {
	Name      string    `json:"name"`
	Template  string    `json:"template"`
	Pid       int       `json:"pid"` // the dev server, leader of its process group
	StartedAt time.Time `json:"started_at"`
	ReadyAt   time.Time `json:"ready_at"`

	// Output is the read end of the dev server's output pipe: the new
	// process keeps reading it, so the server never sees a broken pipe.
	Output *os.File `json:"-"`
	// PidFD refers to the dev server (pidfd_open), so the new process,
	// which is not its parent, learns of its exit without racing pid reuse.
	PidFD *os.File `json:"-"`
}

// SandboxTaker is a Network that can take over the sandbox of a running env
// from an earlier gateway process. NetnsNetwork is one.
type SandboxTaker interface {
	TakeOverSandbox(name string) (Sandbox, error)
}

// TakeOverSandbox implements SandboxTaker with netns.Manager.Adopt.
func (n NetnsNetwork) TakeOverSandbox(name string) (Sandbox, error) {
	sb, err := n.M.Adopt(name)
	if err != nil {
		return nil, err
	}
	return sb, nil
}

var _ SandboxTaker = NetnsNetwork{}

// Handoff gives every ready env away to the process that will replace
// this one, without stopping any. Afterwards the manager starts, stops and
// reaps nothing, and Close returns at once; Acquire still leases the
// handed envs so that requests already in flight in this process finish,
// and refuses every other env (ErrClosed). Starts in progress are waited
// for until ctx ends, then aborted. The caller owns the returned files and
// must close them once they are passed on.
func (m *Manager) Handoff(ctx context.Context) ([]HandedEnv, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	m.closed = true // start checks it: no start begins from now on
	m.mu.Unlock()

	// Let starts already running finish: their requests are waiting.
	for m.anyStarting() && ctx.Err() == nil {
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	m.cancel() // stops the reaper; aborts starts that are still running
	m.wg.Wait()
	// Bring the state file up to date; from here it is the next
	// process's: a write still queued here, or one after a supervisor
	// sees a crash, must not replace its.
	m.stateMu.Lock()
	if m.cfg.StateFile != "" {
		m.writeStateLocked()
	}
	m.stateHanded = true
	m.stateMu.Unlock()

	m.mu.Lock()
	envs := m.envs
	m.envs = make(map[string]*env)
	m.handed = make(map[string]*env)
	m.mu.Unlock()

	var out []HandedEnv
	var errs []error
	for _, e := range envs {
		e.mu.Lock()
		if e.State() != Ready {
			e.mu.Unlock()
			continue
		}
		proc := e.proc
		// Keep Ready and the address, so leases still work here, but let
		// go of the process: supervise sees proc changed and does nothing
		// when it exits, and no stop here can reach it.
		e.sb, e.proc, e.record = nil, nil, nil
		h := HandedEnv{Name: e.name, Template: e.tmpl.Name, Pid: proc.Pid(), StartedAt: e.startedAt, ReadyAt: e.readyAt}
		e.mu.Unlock()
		m.mu.Lock()
		m.handed[e.name] = e
		m.mu.Unlock()

		// Output is read here no more; the rest is the next process's.
		var err error
		if rp, ok := proc.(Recorded); ok {
			h.Output, h.PidFD, err = rp.HandOver()
		} else {
			err = errors.New("the launcher cannot hand its dev servers over")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("lifecycle: hand off %s: %w", e.name, err))
			continue
		}
		out = append(out, h)
		e.log.Info().Int("pid", h.Pid).Msg("env handed to the new gateway process")
	}
	return out, errors.Join(errs...)
}

// anyStarting reports whether a start is in progress.
func (m *Manager) anyStarting() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.envs {
		if e.State() == Starting {
			return true
		}
	}
	return false
}

// DupConn duplicates c's descriptor (close-on-exec) without switching it
// to blocking mode, as os.File.Fd and TCPListener.File would. The gateway
// uses it to hand descriptors to its successor.
func DupConn(c syscall.Conn, name string) (*os.File, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	return os.NewFile(uintptr(nfd), name), nil
}

// TakeOver adopts envs handed over by the previous gateway process: their
// sandboxes (through Config.Network, which must be a SandboxTaker), their
// processes and their output. Each becomes Ready here, counts against
// Limits.MaxEnvs, and is reaped and stopped like an env started here. It
// takes ownership of the envs' files. The Launcher must be an Adopter. Envs it cannot adopt are reported
// and their files closed; the caller should then remove what is left of
// them (netns GC).
func (m *Manager) TakeOver(handed []HandedEnv) error {
	taker, ok := m.cfg.Network.(SandboxTaker)
	ad, aok := m.cfg.Launcher.(Adopter)
	if !ok || !aok {
		for _, h := range handed {
			closeHanded(h)
		}
		return errors.New("lifecycle: take over: the network cannot adopt sandboxes, or the launcher dev servers")
	}
	var errs []error
	for _, h := range handed {
		if err := m.takeOver(taker, ad, h); err != nil {
			closeHanded(h)
			errs = append(errs, fmt.Errorf("lifecycle: take over %s: %w", h.Name, err))
		}
	}
	m.saveState()
	return errors.Join(errs...)
}

func closeHanded(h HandedEnv) {
	if h.Output != nil {
		h.Output.Close()
	}
	if h.PidFD != nil {
		h.PidFD.Close()
	}
}

func (m *Manager) takeOver(taker SandboxTaker, ad Adopter, h HandedEnv) error {
	if h.Output == nil || h.PidFD == nil {
		return errors.New("missing output pipe or pidfd")
	}
	e, err := m.lookup(h.Name)
	if err != nil {
		return err
	}
	if e.tmpl.Name != h.Template {
		// The config changed: the env would now run from another template.
		// Adopting it would keep the old command running under the new
		// template's name; better restart it.
		return fmt.Errorf("its template is now %s, was %s; it will start afresh", e.tmpl.Name, h.Template)
	}
	sb, err := taker.TakeOverSandbox(h.Name)
	if err != nil {
		return err
	}
	proc, err := ad.Adopt(AdoptRequest{Env: h.Name, Template: e.tmpl, Pid: h.Pid, Pipe: h.Output, PidFD: h.PidFD,
		Sandbox: sb, Output: e.out, Log: e.log})
	if err != nil {
		return err
	}
	addr := netip.AddrPortFrom(sb.Addr(), uint16(e.tmpl.Port))

	e.mu.Lock()
	e.sb, e.proc, e.record = sb, proc, nil
	e.addr.Store(&addr)
	e.startedAt, e.readyAt = h.StartedAt, h.ReadyAt
	e.lastActive.Store(time.Now().UnixNano())
	e.setStateLocked(Ready)
	e.mu.Unlock()
	m.admitMu.Lock()
	m.running++
	e.holdsSlot.Store(true)
	m.admitMu.Unlock()
	m.supWG.Go(func() { m.supervise(e, proc) })
	e.log.Info().Int("pid", h.Pid).Str("addr", addr.String()).Msg("env taken over from the previous gateway process")
	return nil
}
