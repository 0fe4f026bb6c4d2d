package lifecycle

import (
	"context"
	"errors"
	"fmt"
)

// ErrNotOwner refuses a start of an env that this gateway does not own
// in its cluster (another node does, or ownership could not be
// established: etcd is out of reach). The gateway answers it with a 503
// and Retry-After. The error wraps the cluster's cause.
var ErrNotOwner = errors.New("lifecycle: env not owned by this node")

// Ownership makes, in cluster mode, each start of an env a claim on it
// and each stop a release, so that an env runs on one node of the
// cluster at most and its owner key lives only as long as it runs.
type Ownership interface {
	// Claim is asked at each start of env, after admission and before
	// anything is made for it. It returns the fencing token of this
	// node's claim (positive); an error refuses the start.
	Claim(ctx context.Context, env string) (Fence, error)
	// Release is told when env, started under the claim of token, has
	// stopped (its processes are dead): the claim may go. It must not
	// block; a later Claim of env waits for the release to end.
	Release(env string, token int64)
}

// Fence is an owner's claim on an env's data dir: Token, ever growing
// across the cluster, is recorded in Dir/<env>.token by the claim. An
// isolated env's init holds Dir/<env>.lock while any process of the env
// lives, and stops the env when a newer token is recorded (see
// lifecycle/devserver/trampoline/fence.go). The zero Fence fences
// nothing.
type Fence struct {
	Dir   string
	Token int64
}

// claim asks Config.Ownership for a claim on e; it records the token for
// release.
func (m *Manager) claim(ctx context.Context, e *env) (Fence, error) {
	if m.cfg.Ownership == nil {
		return Fence{}, nil
	}
	f, err := m.cfg.Ownership.Claim(ctx, e.name)
	if err != nil {
		return Fence{}, fmt.Errorf("%w: %w", ErrNotOwner, err)
	}
	e.mu.Lock()
	e.fence = f
	e.mu.Unlock()
	return f, nil
}

// claimed is e's current claim (Config.Ownership), zero without one.
func (e *env) claimed() Fence {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fence
}

// release tells Config.Ownership that e, stopped, no longer needs its
// claim. e's processes must be dead.
func (m *Manager) release(e *env) {
	e.mu.Lock()
	token := e.fence.Token
	e.fence = Fence{}
	e.mu.Unlock()
	if token != 0 && m.cfg.Ownership != nil {
		m.cfg.Ownership.Release(e.name, token)
	}
}
