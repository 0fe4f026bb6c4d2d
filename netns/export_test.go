package netns

import "github.com/google/nftables"

// UseBaseMountNS switches the base mount namespace (mountns.go) off for
// a side-by-side benchmark.
var UseBaseMountNS = &useBaseMountNS

// SetMember puts host link ifname into policy's set without a sandbox,
// for tests of the sets alone.
func (f *Firewall) SetMember(ifname, policy string) error { return f.setMember(ifname, policy) }

// DestroyParallel is how many namespaces DestroyAll deletes at once.
var DestroyParallel = &destroyParallel

// ProcInstanceAbove is how many live sandboxes make the sandbox's sysctl
// go through a procfs instance, for a side-by-side benchmark.
var ProcInstanceAbove = &procInstanceAbove

// NewProcInstance is newProcInstance, for a test that this kernel can.
var NewProcInstance = newProcInstance

// HostFirewall is hostFirewall on a connection of its own: whether
// OpenFirewall keeps the gateway's connections to sandboxes tracked.
func HostFirewall() bool { return hostFirewall(&nftables.Conn{}) }
