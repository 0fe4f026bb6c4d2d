package gateway

import (
	"context"
	"net/netip"
	"time"

	"github.com/envgate/envgate/lifecycle"
)

// Envs is what the gateway needs of the lifecycle manager: a lease on a
// ready env, starting it first if needed. Lifecycle adapts a
// *lifecycle.Manager; tests use fakes. The optional interfaces PortNamer,
// ProgressReporter and EnvKnower are found on the same value.
type Envs interface {
	// Acquire returns a lease on env name, or the errors
	// lifecycle.Manager.Acquire documents (the gateway maps them to
	// pages: see Handler.acquireError).
	Acquire(ctx context.Context, name string) (Lease, error)
}

// Lease is the gateway's hold on a ready env for one request or
// connection: the env is not reaped while it is held. *lifecycle.Lease
// implements it.
type Lease interface {
	// Env is the leased env's name.
	Env() string
	// Port is the address of the env's port called name, "" for its
	// default port; false if its template has no such port.
	Port(name string) (netip.AddrPort, bool)
	// ColdStart is how long the Acquire waited for a start; zero when
	// the env was ready.
	ColdStart() time.Duration
	// Template is the template the env runs from, or nil.
	Template() *lifecycle.Template
	// Release ends the lease; calling it again is harmless.
	Release()
}

// Lifecycle adapts a *lifecycle.Manager to Envs. Its other methods, and
// so PortNamer, ProgressReporter and EnvKnower, are the manager's.
type Lifecycle struct{ *lifecycle.Manager }

// Acquire implements Envs.
func (l Lifecycle) Acquire(ctx context.Context, name string) (Lease, error) {
	lease, err := l.Manager.Acquire(ctx, name)
	if err != nil {
		return nil, err // not a typed nil in a non-nil Lease
	}
	return lease, nil
}

// waitedLease is a lease whose cold start took longer than the
// manager's Acquire measured: the wait began before a waiting page.
type waitedLease struct {
	Lease
	waited time.Duration
}

func (l waitedLease) ColdStart() time.Duration { return l.waited }
