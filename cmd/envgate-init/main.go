// Command envgate-init is the trampoline of envgate's dev servers: the
// gateway starts a dev server through it when something must happen in
// the new process before the dev server runs (no_new_privs, rlimits,
// joining cgroup v1, an isolated env's mounts, where it then stays as the
// init of the env's pid namespace). See package
// lifecycle/devserver/trampoline.
//
// Install it next to the envgate binary (make build puts both in bin/).
// Without it the gateway re-executes its own, much larger binary, whose
// package initialisation costs a few milliseconds of CPU at each start.
// It imports only the standard library and golang.org/x/sys, so that it
// starts in about a millisecond. Built with cgo (make build does, where a
// C compiler is), its C fast path (fastpath.c) does the same work from a
// constructor before the Go runtime starts: an isolated env's init is
// then a single-threaded C process that sleeps in one poll(2) until a
// signal or its dev server's exit, with no runtime of its own to start at
// each env start or to wake while the env idles. It is not meant to be
// run by hand.
package main

import (
	"fmt"
	"os"

	"github.com/envgate/envgate/lifecycle/devserver/trampoline"
)

func main() {
	if !trampoline.IsTrampoline() {
		fmt.Fprintln(os.Stderr, "envgate-init: envgate starts dev servers through this program; it is not run by hand")
		os.Exit(2)
	}
	trampoline.Run()
}
