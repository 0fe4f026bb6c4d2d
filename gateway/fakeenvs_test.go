package gateway_test

import (
	"context"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envgate/envgate/cmd/envgate/demo"
	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/netns/netnstest/wait"
	"github.com/rs/zerolog"
)

// fakeEnvs is a lifecycle manager for the proxy-logic tests, which need
// neither root nor real dev servers: each env is a set of http.Handlers,
// one per port, served on loopback listeners of their own from its first
// Acquire until the test ends. It implements gateway.Envs and PortNamer.
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
	// H2C makes its servers speak HTTP/2 without TLS too.
	H2C bool
	// Template is what its leases report (cookie scope, upstream
	// protocol); nil: none.
	Template *lifecycle.Template
	// Err, if set, is what Acquire returns for it.
	Err error
	// Cold is its leases' ColdStart.
	Cold time.Duration

	name  string
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
	f.mu.Lock()
	f.tried[name] = true
	f.mu.Unlock()
	e := f.lookup(name)
	switch {
	case e == nil:
		return nil, lifecycle.ErrNoTemplate
	case e.Err != nil:
		return nil, e.Err
	case ctx.Err() != nil:
		return nil, ctx.Err()
	}
	e.once.Do(func() { e.start(f.t) })
	f.held.Add(1)
	return &fakeLease{f: f, e: e}, nil
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
	return ok && port != ""
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
	done atomic.Bool
}

func (l *fakeLease) Env() string                   { return l.e.name }
func (l *fakeLease) ColdStart() time.Duration      { return l.e.Cold }
func (l *fakeLease) Template() *lifecycle.Template { return l.e.Template }

func (l *fakeLease) Port(name string) (netip.AddrPort, bool) {
	a, ok := l.e.addrs[name]
	return a, ok
}

func (l *fakeLease) Release() {
	if l.done.CompareAndSwap(false, true) {
		l.f.held.Add(-1)
	}
}
