package lifecycle

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The trampoline. Some things must happen inside the dev server's process
// after fork and before it runs: no_new_privs (SysProcAttr has no field
// for PR_SET_NO_NEW_PRIVS) and, on cgroup v1 (which has no clone into a
// cgroup), joining its cgroup before it can fork (without no_new_privs,
// startInCgroupsV1 does that without a trampoline). So such dev servers are
// started as /proc/self/exe, the gateway's own binary, with these
// variables; this package's init does the work and execs the real
// program. It costs one extra exec, a few milliseconds.
const (
	execVar       = "ENVGATE_EXEC"        // the program to become
	execNNPVar    = "ENVGATE_EXEC_NNP"    // "1": set no_new_privs first
	execCgroupVar = "ENVGATE_EXEC_CGROUP" // cgroup.procs files to join, ":"-separated
)

func init() {
	path := os.Getenv(execVar)
	if path == "" {
		return
	}
	// no_new_privs is per thread and survives execve: set it on the
	// thread that execs.
	runtime.LockOSThread()
	nnp, cgs := os.Getenv(execNNPVar) == "1", os.Getenv(execCgroupVar)
	for _, v := range []string{execVar, execNNPVar, execCgroupVar} {
		os.Unsetenv(v)
	}
	if cgs != "" {
		for _, f := range strings.Split(cgs, ":") {
			// "0" is the writing process itself.
			if err := os.WriteFile(f, []byte("0"), 0); err != nil {
				fmt.Fprintf(os.Stderr, "envgate: join cgroup: %v\n", err)
				os.Exit(126)
			}
		}
	}
	if nnp {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			fmt.Fprintf(os.Stderr, "envgate: no_new_privs: %v\n", err)
			os.Exit(126)
		}
	}
	err := syscall.Exec(path, os.Args, os.Environ())
	fmt.Fprintf(os.Stderr, "envgate: exec %s: %v\n", path, err)
	os.Exit(127)
}

// viaTrampoline makes cmd start through the trampoline.
func viaTrampoline(cmd *exec.Cmd, nnp bool, cgroupProcs []string) {
	if cmd.Err != nil || !nnp && len(cgroupProcs) == 0 {
		return // Start reports the failed path lookup
	}
	cmd.Env = append(cmd.Env, execVar+"="+cmd.Path)
	if nnp {
		cmd.Env = append(cmd.Env, execNNPVar+"=1")
	}
	if len(cgroupProcs) > 0 {
		cmd.Env = append(cmd.Env, execCgroupVar+"="+strings.Join(cgroupProcs, ":"))
	}
	// /proc/self/exe, not the binary's path: the directories on the way to
	// the gateway's binary need not be open to the dev server's user.
	cmd.Path = "/proc/self/exe"
}

// credential is who a dev server runs as.
type credential struct {
	uid, gid uint32
}

// resolveUser parses a template's user: a user name ("dev"), a uid
// ("1000") or uid:gid ("1000:1000"). A name or bare uid takes the
// user's primary group from the user database.
func resolveUser(s string) (credential, error) {
	if u, g, ok := strings.Cut(s, ":"); ok {
		uid, err1 := strconv.ParseUint(u, 10, 32)
		gid, err2 := strconv.ParseUint(g, 10, 32)
		if err1 != nil || err2 != nil {
			return credential{}, fmt.Errorf("%q: want a user name, a uid or uid:gid", s)
		}
		return credential{uint32(uid), uint32(gid)}, nil
	}
	var u *user.User
	var err error
	if _, nerr := strconv.ParseUint(s, 10, 32); nerr == nil {
		u, err = user.LookupId(s)
	} else {
		u, err = user.Lookup(s)
	}
	if err != nil {
		return credential{}, fmt.Errorf("%q: %w (create the user, or give uid:gid)", s, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return credential{uint32(uid), uint32(gid)}, nil
}

// prepareUser checks User and AllowRoot; Prepare calls it.
func (t *Template) prepareUser() error {
	t.cred = nil
	if t.User == "" {
		return nil
	}
	c, err := resolveUser(t.User)
	if err != nil {
		return fmt.Errorf("user: %w", err)
	}
	if c.uid == 0 && !t.AllowRoot {
		return fmt.Errorf("user: %q is root; set allow_root: true to run dev servers as root", t.User)
	}
	t.cred = &c
	return nil
}

// dropPrivileges makes cmd run as cred, with no supplementary groups and
// no capabilities (the kernel clears them when root becomes another uid).
// It reports whether it did: the caller then asks the trampoline for
// no_new_privs.
func dropPrivileges(cmd *exec.Cmd, cred *credential) bool {
	if cred == nil || cred.uid == 0 {
		return false
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: cred.uid, Gid: cred.gid, Groups: []uint32{}}
	return true
}
