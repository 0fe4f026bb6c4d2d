// Package netns owns the kernel side of an environment: a named network
// namespace (visible to `ip netns`), a veth pair joining it to the root
// namespace, the addresses on both ends, and the processes started inside.
//
// Everything it creates carries the instance prefix of its Manager, so
// several gateways (and parallel test binaries) can share one machine and
// clean up only what is theirs. It knows nothing about environments, HTTP or
// templates: callers give it an opaque ID and get back a Sandbox.
//
// Threads: setns(2) changes the calling OS thread only. All namespace
// switching goes through one helper (onThreadIn) that locks the goroutine to
// its thread, and unlocks it only when switching back succeeded, so a thread
// left in the wrong namespace is discarded by the runtime. Netlink work uses
// handles bound to a namespace, so it never switches threads at all.
package netns
