package lifecycle

import (
	"context"
	"errors"
	"net/netip"

	"github.com/envgate/envgate/netns"
)

// Network makes and removes the sandboxes envs run in.
type Network interface {
	// Create makes the sandbox for env name.
	Create(ctx context.Context, name string) (Sandbox, error)
	// Destroy kills what runs in sb and removes it; idempotent.
	Destroy(sb Sandbox) error
}

// Sandbox is where one env's dev server runs. The Launcher starts the
// dev server in it (a netns.Sandbox starts processes inside its network
// namespace).
type Sandbox interface {
	// Addr is the address the dev server's port is reached at from the
	// gateway.
	Addr() netip.Addr
}

// NetnsNetwork runs envs in network namespaces of a netns.Manager.
type NetnsNetwork struct {
	M *netns.Manager
	// Policy, when set, puts every sandbox under the instance's
	// firewall (firewall.go).
	Policy *SandboxPolicy
}

// Create implements Network.
func (n NetnsNetwork) Create(ctx context.Context, name string) (Sandbox, error) {
	setup, err := n.Policy.setup(name)
	if err != nil {
		return nil, err
	}
	sb, err := n.M.CreateWith(ctx, name, setup)
	if err != nil {
		return nil, err
	}
	if err := n.Policy.attach(sb, name); err != nil {
		n.M.Destroy(sb) // best effort; the policy's error is what matters
		return nil, err
	}
	return sb, nil
}

// Destroy implements Network.
func (n NetnsNetwork) Destroy(sb Sandbox) error {
	return errors.Join(n.M.Destroy(sb.(*netns.Sandbox)), n.Policy.detach(sb.(*netns.Sandbox)))
}

// DestroyAll implements BatchNetwork with netns.Manager.DestroyAll.
func (n NetnsNetwork) DestroyAll(sbs []Sandbox) error {
	all := make([]*netns.Sandbox, len(sbs))
	for i, sb := range sbs {
		all[i] = sb.(*netns.Sandbox)
	}
	return errors.Join(n.M.DestroyAll(all), n.Policy.detachAll(all))
}

// Settle waits until the kernel has removed the veths of destroyed
// sandboxes (netns.Manager.Settle).
func (n NetnsNetwork) Settle(ctx context.Context) error { return n.M.Settle(ctx) }

// settler is a Network whose teardown finishes in the background; Close
// waits for it.
type settler interface {
	Settle(ctx context.Context) error
}

// Rename implements RenamingNetwork with netns.Manager.Rename.
func (n NetnsNetwork) Rename(sb Sandbox, name string) error {
	if err := n.M.Rename(sb.(*netns.Sandbox), name); err != nil {
		return err
	}
	return n.Policy.attach(sb.(*netns.Sandbox), name)
}
