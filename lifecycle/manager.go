package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"
)

// Config configures a Manager.
type Config struct {
	// Templates, in order; the first whose Match fits an env name runs it.
	// Each must have been Prepared.
	Templates []*Template
	// DataRoot holds one data dir per env (DataRoot/<name>), which
	// survives stops and restarts. Required.
	DataRoot string
	// Network makes the sandboxes. Required.
	Network Network
	// Launcher runs the dev servers in them (devserver.Launcher).
	// Required.
	Launcher Launcher
	// Allow, if set, is asked before an env is started for the first time;
	// a non-nil error refuses the env (wrapped in ErrNotAllowed). It is
	// called with the manager's lock held (and by Allowed during TLS
	// handshakes), so it must be a fast in-memory lookup, such as a
	// lifecycle/sources Source's Allow.
	Allow func(name string) error
	// ReapInterval is how often idle envs are looked for; default 1s.
	ReapInterval time.Duration
	// Limits bound how many envs run and start at once, and how much
	// memory must stay available.
	Limits Limits
	// AvailableMemory reports available memory in bytes for
	// Limits.MinAvailableMemory; default SystemAvailableMemory.
	AvailableMemory func() (int64, error)
	// BeforeStop, if set, is called when a running env is about to be
	// stopped, before its dev server gets SIGTERM, with the address it
	// was reached at. Unless the stop is forced (Stop, Close) nothing is
	// in flight then: the gateway closes its idle connections to addr,
	// so a dev server that drains keep-alive connections stops at once.
	// It is called too when a dev server exited on its own, before its
	// sandbox is destroyed: the gateway's connections to it are dead,
	// and those made inside its network namespace would keep the
	// namespace, and its veth, alive until they were closed.
	BeforeStop func(env string, addr netip.AddrPort)
	// WarmPool, if positive, is how many sandboxes are kept made ahead of
	// time (with their addresses), so that a cold start only spawns the
	// dev server; a background loop refills the pool. Needs a Network
	// that implements RenamingNetwork. Env names starting with "warm--"
	// are then refused. Default 0: none.
	WarmPool int
	// StateFile, if set, is where the manager records its running envs
	// (name, namespace, address, pid), rewritten atomically at every
	// start and stop, so that Recover in the next gateway process can
	// adopt them after a crash.
	StateFile string
	// AfterDestroy, if set, is called by Destroy once the env is stopped
	// and forgotten and its data dir and logs removed (also when a removal
	// failed), so that what the env owns outside the manager goes too:
	// its checkout, its certificate. It runs on Destroy's goroutine with
	// no lock held.
	AfterDestroy func(name string)
	// Ownership, in cluster mode, claims each env before its start and
	// releases it after its stop. Default nil: every env is this
	// gateway's.
	Ownership Ownership
	// Observer, if set, is told of starts, refusals and stops (metrics).
	Observer Observer
	// Log receives lifecycle events and dev servers' output.
	Log zerolog.Logger
}

// Manager runs envs. Its methods are safe for concurrent use.
type Manager struct {
	cfg    Config
	log    zerolog.Logger
	starts singleflight.Group
	ctx    context.Context // cancelled by Close: aborts starts
	cancel context.CancelFunc
	wg     sync.WaitGroup // starts and the reaper
	supWG  sync.WaitGroup // supervisors: they end when their process does

	mu     sync.Mutex
	envs   map[string]*env // guarded by mu
	closed bool            // guarded by mu
	// handed are the envs given to another process by Handoff, out of
	// envs so that nothing here stops them; they stay leasable. Guarded
	// by mu.
	handed map[string]*env

	reapNext    time.Time     // the reap loop's: the next idle teardown may start then
	warm        *warmPool     // nil without Config.WarmPool
	warmOn      bool          // guarded by mu; the refill loop runs
	startTurns  chan struct{} // one token per start in progress (MaxStarting)
	admitMu     sync.Mutex
	stateMu     sync.Mutex     // serialises state file writes
	stateQueued atomic.Bool    // a saveStateSoon write has not taken its snapshot yet
	stateLast   atomic.Int64   // UnixNano when the last background write began
	stateHanded bool           // guarded by stateMu; after Handoff, never write the file
	stateWG     sync.WaitGroup // saveStateSoon writers
	running     int            // guarded by admitMu; envs holding a MaxEnvs slot
	// slotQueue are the starts waiting, oldest first, for the slot of an
	// env on its way out that no start evicted. Guarded by admitMu.
	slotQueue []*slotWaiter
	// queuedStarts counts starts waiting for a MaxStarting turn.
	queuedStarts atomic.Int64
}

// New returns a Manager and starts its reaper. Call Close to stop it and
// every env.
func New(cfg Config) (*Manager, error) {
	if cfg.Network == nil {
		return nil, errors.New("lifecycle: Config.Network is required")
	}
	if cfg.Launcher == nil {
		return nil, errors.New("lifecycle: Config.Launcher is required")
	}
	if cfg.DataRoot == "" {
		return nil, errors.New("lifecycle: Config.DataRoot is required")
	}
	if len(cfg.Templates) == 0 {
		return nil, errors.New("lifecycle: at least one template is required")
	}
	for _, t := range cfg.Templates {
		if len(t.parsed) == 0 {
			return nil, fmt.Errorf("lifecycle: template %q was not prepared", t.Name)
		}
	}
	if tc, ok := cfg.Launcher.(TemplateChecker); ok {
		for _, t := range cfg.Templates {
			if err := tc.CheckTemplate(t); err != nil {
				return nil, err
			}
		}
	}
	if cfg.ReapInterval <= 0 {
		cfg.ReapInterval = time.Second
	}
	cfg.Limits.setDefaults()
	if cfg.AvailableMemory == nil {
		cfg.AvailableMemory = SystemAvailableMemory
	}
	// 0711: env users can reach their own data dir, but not list others.
	if err := os.MkdirAll(cfg.DataRoot, 0o711); err != nil {
		return nil, fmt.Errorf("lifecycle: data root: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{cfg: cfg, log: cfg.Log, ctx: ctx, cancel: cancel, envs: make(map[string]*env),
		startTurns: make(chan struct{}, cfg.Limits.MaxStarting)}
	var err error
	if m.warm, err = newWarmPool(cfg); err != nil {
		cancel()
		return nil, err
	}
	m.wg.Go(m.reapLoop)
	m.wg.Go(m.memoryLoop)
	return m, nil
}

// env is one environment. Its state is an atomic so the request path can
// read it without a lock; it is only written with mu held.
type env struct {
	name    string
	tmpl    *Template
	dataDir string
	out     *Output
	log     zerolog.Logger

	state      atomic.Int32 // State
	inflight   atomic.Int64
	requests   atomic.Int64 // leases taken, for the admin API
	lastActive atomic.Int64 // unix nanoseconds
	addr       atomic.Pointer[netip.AddrPort]
	holdsSlot  atomic.Bool // admitted: counts against Limits.MaxEnvs
	// heir is the start that evicts this env and gets its slot; written
	// with Manager.admitMu held.
	heir atomic.Pointer[slotWaiter]
	// polledAt is when a waiting page last asked how the start goes
	// (unix nanoseconds): someone still waits for it (see abandoned).
	polledAt atomic.Int64

	mu        sync.Mutex
	forgotten bool    // guarded by mu; dropped from Manager.envs, never to start again
	inStart   bool    // guarded by mu; a start of this env is under way
	sb        Sandbox // guarded by mu; set while Ready or Stopping
	proc      Process // guarded by mu; set while Ready or Stopping
	// record is proc's encoded state file record (statefile.go), made
	// once; nil while proc is. Guarded by mu.
	record    []byte
	stopped   chan struct{} // guarded by mu; closed when the running stop ends
	failure   *StartError   // guarded by mu; the last failure
	failures  int           // guarded by mu; consecutive failed starts
	startedAt time.Time     // guarded by mu
	fence     Fence         // guarded by mu; the Ownership claim of the running start, zero if none
	readyAt   time.Time     // guarded by mu
	updating  string        // guarded by mu; the commit being prepared, "" when no prepare step runs
	// madeDataDir: a start of this gateway made the data dir, and the
	// env has not been ready since; a failed start then removes it
	// (nothing of the env's is in it but what its failed starts wrote).
	// Guarded by mu.
	madeDataDir bool
	// waiters counts Acquire calls waiting for a start of this env;
	// leftAt is when the last of them left, and unwatched is closed then.
	// Guarded by mu.
	waiters   int
	leftAt    time.Time
	unwatched chan struct{}
}

func (e *env) State() State { return State(e.state.Load()) }

// setStateLocked changes state; e.mu must be held.
func (e *env) setStateLocked(s State) { e.state.Store(int32(s)) }

// Lease is a caller's hold on a ready env: while any lease is held the env
// is busy and is not reaped. Release it when the request (or connection)
// ends.
type Lease struct {
	// Addr is where the env's dev server answers.
	Addr netip.AddrPort
	// Cold is how long this Acquire waited for a start; zero when the env
	// was already ready.
	Cold time.Duration

	e    *env
	done atomic.Bool
}

// Env is the leased env's name.
func (l *Lease) Env() string { return l.e.name }

// ColdStart is Cold, for callers that see a lease through an interface
// (gateway.Lease).
func (l *Lease) ColdStart() time.Duration { return l.Cold }

// sandboxDialer is a Sandbox that can dial from inside its network
// namespace (*netns.Sandbox).
type sandboxDialer interface {
	DialContext(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error)
}

// DialContext connects to addr, an address of the env's, with d: from
// inside the env's network namespace when its sandbox can (so the
// connection crosses neither its veth nor the host's firewall), from the
// host's otherwise.
func (l *Lease) DialContext(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
	l.e.mu.Lock()
	sb, ok := l.e.sb.(sandboxDialer)
	l.e.mu.Unlock()
	if ok {
		return sb.DialContext(ctx, d, network, addr)
	}
	return d.DialContext(ctx, network, addr)
}

// Release ends the lease. Calling it more than once is harmless.
func (l *Lease) Release() {
	if l.done.CompareAndSwap(false, true) {
		l.e.lastActive.Store(time.Now().UnixNano())
		l.e.inflight.Add(-1)
	}
}

// tryLease takes a lease if the env is ready. The increment comes before
// the state check, and the reaper moves state before it checks inflight,
// so one of the two always sees the other.
func (e *env) tryLease() *Lease {
	e.inflight.Add(1)
	if e.State() != Ready {
		e.inflight.Add(-1)
		return nil
	}
	e.requests.Add(1)
	e.lastActive.Store(time.Now().UnixNano())
	return &Lease{Addr: *e.addr.Load(), e: e}
}

// Acquire returns a lease on env name, starting the env first if needed.
// Concurrent calls for one env share one start. The start runs detached
// from ctx with the template's own timeout; ctx bounds only this caller's
// wait. Errors: ErrNoTemplate, ErrNotAllowed, ErrClosed, *StartError,
// *CapacityError (errors.Is ErrAtCapacity), or ctx's error.
func (m *Manager) Acquire(ctx context.Context, name string) (*Lease, error) {
	e, err := m.lookup(name)
	if err != nil {
		return nil, err
	}
	if l := e.tryLease(); l != nil {
		return l, nil
	}
	return m.acquireCold(ctx, name, e)
}

// acquireCold is Acquire for an env that is not ready: it waits for a
// start. (Apart from Acquire so that what its closure captures is not
// allocated on the warm path.)
func (m *Manager) acquireCold(ctx context.Context, name string, e *env) (*Lease, error) {
	began := time.Now()
	for {
		if l := e.tryLease(); l != nil {
			l.Cold = time.Since(began)
			return l, nil
		}
		// Counted as a waiter from before the start may begin until this
		// call stops waiting: a start nobody waits for any more is
		// dropped before it begins (see abandoned).
		e.addWaiter()
		ch := m.starts.DoChan(name, func() (any, error) { return nil, m.start(e) })
		var r singleflight.Result
		select {
		case <-ctx.Done():
			e.removeWaiter()
			return nil, context.Cause(ctx)
		case r = <-ch:
		}
		if r.Err == nil {
			// Leased before this call stops counting as a waiter: until
			// then admission does not take the env for an idle one
			// (victim).
			if l := e.tryLease(); l != nil {
				e.removeWaiter()
				l.Cold = time.Since(began)
				return l, nil
			}
		}
		e.removeWaiter()
		switch {
		case errors.Is(r.Err, errForgotten):
			// The entry was dropped as stale while we held it: use the
			// current one.
			var err error
			if e, err = m.lookup(name); err != nil {
				return nil, err
			}
		case errors.Is(r.Err, errStartDropped):
			// We joined a start just as it was dropped for want of
			// waiters: start again.
		case r.Err != nil:
			return nil, r.Err
		}
	}
}

// lookup finds or makes the env entry for name.
func (m *Manager) lookup(name string) (*env, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		// While closing (or handing over), a ready env still serves;
		// start refuses anything that would need a new start.
		if e, ok := m.handed[name]; ok {
			return e, nil
		}
		if e, ok := m.envs[name]; ok {
			return e, nil
		}
		return nil, ErrClosed
	}
	m.startWarmLocked()
	if e, ok := m.envs[name]; ok {
		return e, nil
	}
	var tmpl *Template
	for _, t := range m.cfg.Templates {
		if t.Matches(name) {
			tmpl = t
			break
		}
	}
	if tmpl == nil || m.reservedName(name) {
		return nil, fmt.Errorf("%w: %s", ErrNoTemplate, name)
	}
	if m.cfg.Allow != nil {
		if err := m.cfg.Allow(name); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrNotAllowed, name, err)
		}
	}
	e := &env{
		name:    name,
		tmpl:    tmpl,
		dataDir: filepath.Join(m.cfg.DataRoot, name),
		out:     new(Output),
		log:     m.log.With().Str("env", name).Logger(),
	}
	m.envs[name] = e
	return e, nil
}

// Info describes an env for listings.
type Info struct {
	Name       string
	Template   string
	State      State
	Addr       netip.AddrPort
	Pid        int
	InFlight   int64
	LastActive time.Time
	StartedAt  time.Time
	Failure    string
}

// List describes every env the manager knows of.
func (m *Manager) List() []Info {
	m.mu.Lock()
	envs := make([]*env, 0, len(m.envs))
	for _, e := range m.envs {
		envs = append(envs, e)
	}
	m.mu.Unlock()
	out := make([]Info, 0, len(envs))
	for _, e := range envs {
		e.mu.Lock()
		in := Info{
			Name:       e.name,
			Template:   e.tmpl.Name,
			State:      e.State(),
			InFlight:   e.inflight.Load(),
			LastActive: time.Unix(0, e.lastActive.Load()),
			StartedAt:  e.startedAt,
		}
		if a := e.addr.Load(); a != nil && in.State == Ready {
			in.Addr = *a
		}
		if e.proc != nil {
			in.Pid = e.proc.Pid()
		}
		if e.failure != nil && in.State == Failed {
			in.Failure = e.failure.Reason
		}
		e.mu.Unlock()
		out = append(out, in)
	}
	return out
}

// Tail returns up to n of the newest output lines of env name.
func (m *Manager) Tail(name string, n int) []string {
	m.mu.Lock()
	e := m.envs[name]
	m.mu.Unlock()
	if e == nil {
		return nil
	}
	return e.out.Tail(n)
}
