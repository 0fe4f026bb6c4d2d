package lifecycle

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The trampoline. Some things must happen inside the dev server's process
// after fork and before it runs: no_new_privs (SysProcAttr has no field
// for PR_SET_NO_NEW_PRIVS), rlimits, on cgroup v1 (which has no clone into
// a cgroup) joining its cgroup before it can fork (without no_new_privs,
// startInCgroupsV1 does that without a trampoline), and, for an isolated
// env, the mounts of its own mount namespace. So such dev servers are
// started as /proc/self/exe, the gateway's own binary, with a launchSpec
// in specVar; this package's init does the work and then either execs the
// real program (one extra exec, a few milliseconds) or, isolated, stays
// as the init of the env's pid namespace (runInit).
const specVar = "ENVGATE_EXEC_SPEC"

// launchSpec is what the trampoline does before the dev server runs.
type launchSpec struct {
	Path    string   `json:"path"`              // the program to become (or to start, with Init)
	NNP     bool     `json:"nnp,omitempty"`     // set no_new_privs first
	Cgroups []string `json:"cgroups,omitempty"` // cgroup v1 cgroup.procs files to join
	Rlimits []rlimit `json:"rlimits,omitempty"`
	// Init: the trampoline is pid 1 of a new pid namespace, in a new mount
	// namespace; it sets the mounts up, starts Path as Cred and stays as
	// its init.
	Init bool      `json:"init,omitempty"`
	Cred *specCred `json:"cred,omitempty"` // with Init; nil: stay root
	// Mounts, with Init.
	TmpSize int64       `json:"tmp_size,omitempty"` // bytes of the private /tmp and /dev/shm
	Keep    []string    `json:"keep,omitempty"`     // paths under /tmp that stay visible (data dir, dir, program)
	Hide    []string    `json:"hide,omitempty"`     // mount points to detach (the netns run dir)
	Binds   []BindMount `json:"binds,omitempty"`    // read-only
}

// specCred is a credential in a launchSpec.
type specCred struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

type rlimit struct {
	Resource int    `json:"r"`
	Max      uint64 `json:"max"`
}

// BindMount is a file or directory of the host that an isolated env sees,
// read-only, at Target (its /etc/resolv.conf, say).
type BindMount struct {
	Source string `json:"source"`
	Target string `json:"target"`
}

func init() {
	s := os.Getenv(specVar)
	if s == "" {
		return
	}
	os.Unsetenv(specVar)
	var sp launchSpec
	if err := json.Unmarshal([]byte(s), &sp); err != nil {
		trampolineFail(126, "launch spec: %v", err)
	}
	// no_new_privs is per thread and survives execve and fork: set it on
	// the thread that execs (or forks).
	runtime.LockOSThread()
	for _, f := range sp.Cgroups {
		// "0" is the writing process itself.
		if err := os.WriteFile(f, []byte("0"), 0); err != nil {
			trampolineFail(126, "join cgroup: %v", err)
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
			trampolineFail(126, "rlimit %d: %v", l.Resource, err)
		}
	}
	if sp.Init {
		os.Exit(runInit(&sp))
	}
	if sp.NNP {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			trampolineFail(126, "no_new_privs: %v", err)
		}
	}
	err := syscall.Exec(sp.Path, os.Args, os.Environ())
	trampolineFail(127, "exec %s: %v", sp.Path, err)
}

// trampolineFail reports on the dev server's output (which the gateway
// shows in its logs and error pages) and exits.
func trampolineFail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "envgate: "+format+"\n", args...)
	os.Exit(code)
}

// viaTrampoline makes cmd start through the trampoline, if sp asks for
// anything it alone can do.
func viaTrampoline(cmd *exec.Cmd, sp launchSpec) {
	if cmd.Err != nil || !sp.NNP && len(sp.Cgroups) == 0 && len(sp.Rlimits) == 0 && !sp.Init {
		return // Start reports the failed path lookup
	}
	sp.Path = cmd.Path
	b, err := json.Marshal(sp)
	if err != nil {
		cmd.Err = fmt.Errorf("lifecycle: launch spec: %w", err)
		return
	}
	cmd.Env = append(cmd.Env, specVar+"="+string(b))
	// /proc/self/exe, not the binary's path: the directories on the way to
	// the gateway's binary need not be open to the dev server's user.
	cmd.Path = "/proc/self/exe"
}

// underTmp reports whether p lies in /tmp, which an isolated env's
// private /tmp hides.
func underTmp(p string) bool { return within(p, "/tmp") }

// within reports whether path p is dir or inside it.
func within(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
