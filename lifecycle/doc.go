// Package lifecycle runs environments: it matches an env name to a
// template, starts the env's dev server inside a sandbox on first use
// (one start per env however many requests wait for it), probes it until
// it answers, hands out leases to callers, and stops envs that sit idle.
//
// It owns the env state machine (starting, ready, stopping, stopped,
// failed), the dev servers' processes and their output. It knows nothing
// about HTTP: the gateway turns its errors into pages. It reaches the
// kernel only through the Network interface, so its logic can be tested
// with a fake, and runs on netns.Manager in production.
package lifecycle
