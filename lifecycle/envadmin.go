package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// EnvDetail describes one env for operators (the admin API): Info plus
// counters and the cgroup's usage.
type EnvDetail struct {
	Info
	// Requests counts the leases taken on the env (requests and
	// connections) since the gateway started.
	Requests int64
	// ReadyAt is when the env last got ready; zero if it never did.
	ReadyAt time.Time
	// LastStart is how long the last successful start took, from
	// admission to the readiness probe's success.
	LastStart time.Duration
	// LastError is the last failed start's or crash's reason, kept
	// after a later success clears the Failed state ("" if none).
	LastError string
	// MemoryBytes is the cgroup's memory use without reclaimable page
	// cache, and CPUTime its CPU time so far; -1 and 0 without a cgroup.
	MemoryBytes int64
	CPUTime     time.Duration
	// DataDir is the env's data dir; LogFile its output on disk ("" when
	// not kept).
	DataDir string
	LogFile string
}

// Details describes every env the manager knows of, sorted by name.
func (m *Manager) Details() []EnvDetail {
	envs := m.snapshot()
	out := make([]EnvDetail, 0, len(envs))
	for _, e := range envs {
		out = append(out, m.detail(e))
	}
	slices.SortFunc(out, func(a, b EnvDetail) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Detail describes env name; ok is false if the manager does not know it
// (it has not run since the gateway started, or was forgotten when idle).
func (m *Manager) Detail(name string) (d EnvDetail, ok bool) {
	m.mu.Lock()
	e := m.envs[name]
	m.mu.Unlock()
	if e == nil {
		return EnvDetail{}, false
	}
	return m.detail(e), true
}

func (m *Manager) detail(e *env) EnvDetail {
	d := EnvDetail{MemoryBytes: -1, DataDir: e.dataDir, LogFile: m.LogFile(e.name)}
	e.mu.Lock()
	d.Info = Info{
		Name:       e.name,
		Template:   e.tmpl.Name,
		State:      e.State(),
		InFlight:   e.inflight.Load(),
		LastActive: time.Unix(0, e.lastActive.Load()),
		StartedAt:  e.startedAt,
	}
	if a := e.addr.Load(); a != nil && d.State == Ready {
		d.Addr = *a
	}
	proc := e.proc
	if proc != nil {
		d.Pid = proc.Pid()
	}
	if e.failure != nil {
		d.LastError = e.failure.Reason
		if d.State == Failed {
			d.Failure = e.failure.Reason
		}
	}
	d.ReadyAt = e.readyAt
	if !e.readyAt.IsZero() && e.readyAt.After(e.startedAt) {
		d.LastStart = e.readyAt.Sub(e.startedAt)
	}
	e.mu.Unlock()
	d.Requests = e.requests.Load()
	if proc != nil {
		// Read without e.mu: these are file reads.
		d.MemoryBytes, d.CPUTime = proc.Usage()
	}
	return d
}

// LogFile is where env name's output is kept on disk, or "" when the
// launcher keeps none (see LogKeeper). The file may not exist yet.
func (m *Manager) LogFile(name string) string {
	if lk, ok := m.cfg.Launcher.(LogKeeper); ok {
		return lk.LogFile(name)
	}
	return ""
}

// Restart stops env name if it runs and starts it again, waiting for it
// to be ready or for ctx. Errors are Acquire's.
func (m *Manager) Restart(ctx context.Context, name string) (EnvDetail, error) {
	m.Stop(name, "restart asked by an operator")
	l, err := m.Acquire(ctx, name)
	if err != nil {
		return EnvDetail{}, err
	}
	l.Release()
	return m.detail(l.e), nil
}

// ErrBusy means an env was started again while it was being destroyed.
var ErrBusy = errors.New("lifecycle: env started again meanwhile")

// Destroy stops env name if it runs, forgets it, and removes its data
// dir and log files. It may be called for an env the manager does not
// know (its data is on disk from an earlier run). It fails with ErrBusy
// if a request started the env again between the stop and the removal.
func (m *Manager) Destroy(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("lifecycle: destroy: %q is not an env name", name)
	}
	m.Stop(name, "destroy asked by an operator")
	m.mu.Lock()
	e := m.envs[name]
	if e != nil {
		e.mu.Lock()
		st := e.State()
		if e.inStart || e.sb != nil || e.proc != nil || (st != Stopped && st != Failed) {
			e.mu.Unlock()
			m.mu.Unlock()
			return fmt.Errorf("%w: %s is %s", ErrBusy, name, st)
		}
		// A request from now on makes a fresh entry, and its start a
		// fresh data dir.
		e.forgotten = true
		delete(m.envs, name)
		e.mu.Unlock()
	}
	m.mu.Unlock()
	var errs []error
	if err := os.RemoveAll(filepath.Join(m.cfg.DataRoot, name)); err != nil {
		errs = append(errs, fmt.Errorf("lifecycle: destroy %s: data dir: %w", name, err))
	}
	if lk, ok := m.cfg.Launcher.(LogKeeper); ok {
		if err := lk.RemoveLogs(name); err != nil {
			errs = append(errs, fmt.Errorf("lifecycle: destroy %s: log: %w", name, err))
		}
	}
	m.log.Info().Str("env", name).Msg("env destroyed: data dir and logs removed")
	if m.cfg.AfterDestroy != nil {
		m.cfg.AfterDestroy(name)
	}
	return errors.Join(errs...)
}

// Limits returns the limits in force (defaults filled in).
func (m *Manager) Limits() Limits { return m.cfg.Limits }
