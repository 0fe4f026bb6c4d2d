package gateway_test

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/loadtest/demo"
	"github.com/envgate/envgate/netns/netnstest/wait"
	"github.com/rs/zerolog"
)

// fakeEnvs is a lifecycle manager for the proxy-logic tests, which need
// neither root nor real dev servers: each env is a set of http.Handlers,
// one per port, served on loopback listeners of their own from its first
// Acquire until the test ends. It implements gateway.Envs, PortNamer and
// ProgressReporter.
type fakeEnvs struct {
	t testing.TB
	// env describes env name, or returns nil: no template runs it
	// (lifecycle.ErrNoTemplate). Called once per name.
	env func(name string) *fakeEnv

	mu    sync.Mutex
	envs  map[string]*fakeEnv // guarded by mu; by name, once described
	tried map[string]bool     // guarded by mu; names Acquire was called for

	acquires atomic.Int64 // Acquire calls
	held     atomic.Int64 // leases not yet released
}

// fakeEnv is one env of a fakeEnvs.
type fakeEnv struct {
	// Ports are the env's servers by port name; "" is its default port,
	// which every env has (default: the demo dev server's handler).
	Ports map[string]http.Handler
	// DefaultPort, if set, is another name of port "".
	DefaultPort string
	// H2C makes its servers speak HTTP/2 without TLS too.
	H2C bool
	// Template is what its leases report (cookie scope, upstream
	// protocol); nil: none.
	Template *lifecycle.Template
	// Err, if set, is what Acquire returns for it (once Started).
	Err error
	// Cold is its leases' ColdStart, unless they waited for Started.
	Cold time.Duration
	// Started, if set, is closed by the test when the env's start is
	// done: until then Acquire waits for it (or for its context) and
	// Progress reports the start with Output.
	Started chan struct{}
	Output  []string
	// Waiting, if set, gets a value from each Acquire that is about to
	// wait for Started.
	Waiting chan struct{}

	name  string
	began time.Time // guarded by fakeEnvs.mu; the first Acquire's
	once  sync.Once
	addrs map[string]netip.AddrPort // by port name, after once
	conns atomic.Int64              // connections its servers accepted
}

// startFake runs a gateway in front of a fakeEnvs until the test ends.
// o.Templates, ReapInterval and Limits do not apply.
func startFake(t testing.TB, o gwOptions, env func(name string) *fakeEnv) *gw {
	t.Helper()
	f := &fakeEnvs{t: t, env: env, envs: map[string]*fakeEnv{}, tried: map[string]bool{}}
	g := &gw{Fake: f}
	// After the gateway's Stop (cleanups run last-registered first),
	// whose Close does not wait for handlers that were cut off.
	t.Cleanup(func() {
		if !wait.Until(30*time.Second, func() bool { return f.held.Load() == 0 }) {
			t.Errorf("%d leases not released 30s after the gateway stopped", f.held.Load())
		}
	})
	serveGateway(t, g, f, o, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel))
	return g
}

// lookup returns env name's description, or nil.
func (f *fakeEnvs) lookup(name string) *fakeEnv {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.envs[name]
	if !ok {
		e = f.env(name)
		if e != nil {
			e.name = name
		}
		f.envs[name] = e
	}
	return e
}

// Acquire implements gateway.Envs.
func (f *fakeEnvs) Acquire(ctx context.Context, name string) (gateway.Lease, error) {
	f.acquires.Add(1)
	e := f.lookup(name)
	now := time.Now()
	f.mu.Lock()
	f.tried[name] = true
	if e != nil && e.began.IsZero() {
		e.began = now
	}
	f.mu.Unlock()
	switch {
	case e == nil:
		return nil, lifecycle.ErrNoTemplate
	case ctx.Err() != nil:
		return nil, context.Cause(ctx)
	}
	cold := e.Cold
	if e.Started != nil && !isClosed(e.Started) {
		if e.Waiting != nil {
			e.Waiting <- struct{}{}
		}
		select {
		case <-e.Started:
			cold = time.Since(now)
		case <-ctx.Done():
			return nil, context.Cause(ctx) // as lifecycle's Acquire
		}
	}
	if e.Err != nil {
		return nil, e.Err
	}
	e.once.Do(func() { e.start(f.t) })
	f.held.Add(1)
	return &fakeLease{f: f, e: e, cold: cold}, nil
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Progress implements gateway.ProgressReporter.
func (f *fakeEnvs) Progress(name string, tail int) (lifecycle.Progress, error) {
	e := f.lookup(name)
	if e == nil {
		return lifecycle.Progress{}, lifecycle.ErrNoTemplate
	}
	f.mu.Lock()
	p := lifecycle.Progress{StartedAt: e.began, Template: e.Template}
	f.mu.Unlock()
	p.Tail = e.Output[max(len(e.Output)-tail, 0):]
	var se *lifecycle.StartError
	switch {
	case p.StartedAt.IsZero():
		p.State = lifecycle.Stopped
	case errors.As(e.Err, &se):
		p.State, p.Failure = lifecycle.Failed, se
	case e.Started != nil && !isClosed(e.Started):
		p.State = lifecycle.Starting
	default:
		p.State = lifecycle.Ready
	}
	return p, nil
}

// acquired returns the names of the envs Acquire was called for (the
// ones no template runs included), sorted.
func (f *fakeEnvs) acquired() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.tried))
}

// HasPort implements gateway.PortNamer.
func (f *fakeEnvs) HasPort(name, port string) bool {
	e := f.lookup(name)
	if e == nil {
		return false
	}
	_, ok := e.Ports[port]
	return (ok && port != "") || (port != "" && port == e.DefaultPort)
}

// start serves e's ports on loopback until the test ends.
func (e *fakeEnv) start(t testing.TB) {
	e.addrs = map[string]netip.AddrPort{}
	if e.Ports[""] == nil {
		h, err := demo.Handler(demo.Options{Name: e.name})
		if err != nil {
			t.Fatal(err)
		}
		ports := map[string]http.Handler{"": h}
		for k, h := range e.Ports {
			ports[k] = h
		}
		e.Ports = ports
	}
	for port, h := range e.Ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
			ConnState: func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					e.conns.Add(1)
				}
			}}
		if e.H2C {
			srv.Protocols = new(http.Protocols)
			srv.Protocols.SetHTTP1(true)
			srv.Protocols.SetUnencryptedHTTP2(true)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.Serve(ln)
		}()
		t.Cleanup(func() {
			srv.Close()
			<-done
		})
		e.addrs[port] = ln.Addr().(*net.TCPAddr).AddrPort()
	}
}

// fakeLease is a lease on a fakeEnv.
type fakeLease struct {
	f    *fakeEnvs
	e    *fakeEnv
	cold time.Duration
	done atomic.Bool
}

func (l *fakeLease) Env() string                   { return l.e.name }
func (l *fakeLease) ColdStart() time.Duration      { return l.cold }
func (l *fakeLease) Template() *lifecycle.Template { return l.e.Template }

func (l *fakeLease) Port(name string) (netip.AddrPort, bool) {
	if name == l.e.DefaultPort {
		name = ""
	}
	a, ok := l.e.addrs[name]
	return a, ok
}

func (l *fakeLease) Release() {
	if l.done.CompareAndSwap(false, true) {
		l.f.held.Add(-1)
	}
}
