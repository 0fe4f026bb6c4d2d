// Package lifecycle runs environments: it matches an env name to a
// template, starts the env's dev server inside a sandbox on first use
// (one start per env however many requests wait for it), waits until it
// is ready, hands out leases to callers, and stops envs that sit idle.
//
// It owns the env state machine (starting, ready, stopping, stopped,
// failed), admission and eviction, leases, the state file and the
// handing over of envs to a new gateway process. It knows nothing about
// HTTP (the gateway turns its errors into pages) nor about processes: it
// makes sandboxes through the Network interface (netns.Manager in
// production) and has a Launcher (launcher.go; lifecycle/devserver in
// production) start, probe and stop the dev servers in them, so that its
// logic is tested with fakes (lifecycletest.Fake), without root, on a
// testing/synctest clock (statemachine_test.go).
//
// Under load:
//
//   - Activity: a Lease is one unit of activity (a request, or a WebSocket,
//     SSE stream or TCP connection for as long as it is open); in-flight
//     counts and last activity are atomics. The reaper stops envs idle past
//     Template.IdleTimeout or older than Template.MaxLifetime, never one
//     with anything in flight. A request that finds its env stopping waits
//     for the stop and starts it again.
//   - Admission (admission.go): Limits.MaxEnvs and MinAvailableMemory evict
//     idle envs (least recently used; the largest by cgroup memory when
//     memory is short; never one whose requests have yet to take their
//     leases from the start that made it ready), each start as many as it
//     needs and the slot an eviction frees going to the start that made
//     it; a start waits for the slot of an env on its way out, or is
//     refused at once with a *CapacityError when nothing is idle or
//     leaving. MaxStarting queues starts, at most MaxQueuedStarts of them;
//     a queued start nobody waits for any more is dropped before it
//     begins (demand.go).
//   - Supervision (stop.go): a dev server that exits on its own marks its env
//     failed; restarts back off after repeated failures (1s, 2s, ... up to
//     a minute), the count kept while failed starts come within the idle
//     timeout of each other. Stop signals the process group, waits
//     StopGrace, kills it, then the sandbox (every process in the
//     namespace) and the cgroup.
//   - Isolation (lifecycle/devserver): Template.User runs the dev server
//     unprivileged, with no_new_privs, through a trampoline
//     (cmd/envgate-init); Template.Resources limit it through a cgroup of
//     its own (v2 or v1).
//   - Restart (statefile.go, recover.go): Config.StateFile records running
//     envs; Recover adopts those still alive after a gateway crash.
//   - Warm pool (warmpool.go): Config.WarmPool sandboxes kept ready.
package lifecycle
