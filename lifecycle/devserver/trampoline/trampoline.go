// Package trampoline is what runs inside a dev server's process after fork
// and before the dev server: no_new_privs (SysProcAttr has no field for
// PR_SET_NO_NEW_PRIVS), rlimits, on cgroup v1 (which has no clone into a
// cgroup) joining the env's cgroups before the dev server can fork, and,
// for an isolated env, the mounts of its own mount namespace, where it
// then stays as the init of the env's pid namespace (init.go).
//
// lifecycle/devserver starts such dev servers through a trampoline binary
// with a Spec in the environment variable EnvVar: cmd/envgate-init, a
// small program that imports only this package, or else the gateway's
// own binary, whose main calls Run first thing. The package imports only
// the standard library and golang.org/x/sys, so that the binary starts in
// about a millisecond: every import's package initialisation runs at
// each env start.
package trampoline

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// EnvVar holds the JSON Spec of a process started as a trampoline.
const EnvVar = "ENVGATE_EXEC_SPEC"

// Spec is what the trampoline does before the dev server runs.
type Spec struct {
	Path    string   `json:"path"`              // the program to become (or to start, with Init)
	NNP     bool     `json:"nnp,omitempty"`     // set no_new_privs first
	Cgroups []string `json:"cgroups,omitempty"` // cgroup v1 cgroup.procs files to join
	Rlimits []Rlimit `json:"rlimits,omitempty"`
	// Init: the trampoline is pid 1 of a new pid namespace, in a new mount
	// namespace; it sets the mounts up, starts Path as Cred and stays as
	// its init.
	Init bool  `json:"init,omitempty"`
	Cred *Cred `json:"cred,omitempty"` // with Init; nil: stay root
	// Mounts, with Init.
	TmpSize int64       `json:"tmp_size,omitempty"` // bytes of the private /tmp and /dev/shm
	Keep    []string    `json:"keep,omitempty"`     // paths under /tmp that stay visible (data dir, dir, program)
	Hide    []string    `json:"hide,omitempty"`     // mount points to detach (the netns run dir)
	Binds   []BindMount `json:"binds,omitempty"`    // read-only
	// Unset lists variables of the trampoline's environment meant for
	// the trampoline only (its runtime's GOMAXPROCS): removed before the
	// dev server starts.
	Unset []string `json:"unset,omitempty"`
	// Fence, with Init, holds the env's data dir for this start's owner
	// (fence.go).
	Fence *Fence `json:"fence,omitempty"`
}

// Cred is who the dev server runs as.
type Cred struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

// Rlimit is one resource limit, soft and hard alike.
type Rlimit struct {
	Resource int    `json:"r"`
	Max      uint64 `json:"max"`
}

// BindMount is what an isolated env sees, read-only, at Target: a file
// or directory of the host (Source), or a file of its own with Content
// (its /etc/resolv.conf, say), which the init makes on the env's private
// /tmp, so that nothing is written on the host for it.
type BindMount struct {
	Source  string `json:"source,omitempty"`
	Content string `json:"content,omitempty"` // without Source
	Target  string `json:"target"`
}

// IsTrampoline reports whether this process was started as a trampoline
// (EnvVar is set): its main must then call Run before anything else.
func IsTrampoline() bool { return os.Getenv(EnvVar) != "" }

// Run does what the Spec in EnvVar asks and becomes the dev server (or,
// with Init, its init). It never returns: a failure is reported on the
// dev server's output (which the gateway shows in its logs and error
// pages) and ends the process with status 126 or 127.
func Run() {
	s := os.Getenv(EnvVar)
	os.Unsetenv(EnvVar)
	var sp Spec
	if err := json.Unmarshal([]byte(s), &sp); err != nil {
		fail(126, "launch spec: %v", err)
	}
	for _, k := range sp.Unset {
		os.Unsetenv(k)
	}
	// no_new_privs is per thread and survives execve and fork: set it on
	// the thread that execs (or forks).
	runtime.LockOSThread()
	for _, f := range sp.Cgroups {
		// "0" is the writing process itself.
		if err := os.WriteFile(f, []byte("0"), 0); err != nil {
			fail(126, "join cgroup: %v", err)
		}
	}
	for _, l := range sp.Rlimits {
		// syscall's Setrlimit, not unix's: for RLIMIT_NOFILE it also stops
		// the runtime from restoring its own limit in children it starts.
		err := syscall.Setrlimit(l.Resource, &syscall.Rlimit{Cur: l.Max, Max: l.Max})
		var cur syscall.Rlimit
		if errors.Is(err, syscall.EPERM) && syscall.Getrlimit(l.Resource, &cur) == nil && l.Max > cur.Max {
			// Raising a hard limit takes CAP_SYS_RESOURCE: a limit above
			// the gateway's own is the gateway's.
			err = syscall.Setrlimit(l.Resource, &syscall.Rlimit{Cur: cur.Max, Max: cur.Max})
		}
		if err != nil {
			fail(126, "rlimit %d: %v", l.Resource, err)
		}
	}
	if sp.Init {
		os.Exit(runInit(&sp))
	}
	if sp.NNP {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			fail(126, "no_new_privs: %v", err)
		}
	}
	err := syscall.Exec(sp.Path, os.Args, os.Environ())
	fail(127, "exec %s: %v", sp.Path, err)
}

// fail reports on the dev server's output and exits.
func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "envgate: "+format+"\n", args...)
	os.Exit(code)
}
