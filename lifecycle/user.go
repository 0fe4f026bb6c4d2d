package lifecycle

import (
	"fmt"
	"os/user"
	"strconv"
	"strings"
)

// DynamicUser is the Template.User that runs each env as a uid of its
// own (like systemd's DynamicUser), from the launcher's range
// (devserver.Config.Users).
const DynamicUser = "dynamic"

// Defaults for the limits of isolated envs and dynamic users.
const (
	// DefaultTmpSize bounds an isolated env's private /tmp (and
	// /dev/shm); its pages count against the env's cgroup memory.
	DefaultTmpSize = 256 << 20
	// DefaultOpenFiles is RLIMIT_NOFILE of isolated envs.
	DefaultOpenFiles = 65536
	// DefaultProcesses is RLIMIT_NPROC of dynamic users' envs. It counts
	// every task (thread) of the uid: with a uid per env, the env's.
	DefaultProcesses = 1024
)

// RLimits are a dev server's resource limits (soft and hard alike).
type RLimits struct {
	// OpenFiles is RLIMIT_NOFILE. Default: DefaultOpenFiles for isolated
	// envs, else the gateway's own.
	OpenFiles uint64
	// Processes is RLIMIT_NPROC, counted over every process and thread of
	// the env's uid, on the whole machine. Default: DefaultProcesses for
	// dynamic users, else none (a named user's count spans all its envs).
	Processes uint64
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
	t.cred, t.dynamic = nil, false
	if t.User == "" {
		return nil
	}
	if t.User == DynamicUser {
		t.dynamic = true
		return nil
	}
	c, err := resolveUser(t.User)
	if err != nil {
		return fieldError("user", "%w", err)
	}
	if c.uid == 0 && !t.AllowRoot {
		return fieldError("user", "%q is root; set allow_root: true to run dev servers as root", t.User)
	}
	t.cred = &c
	return nil
}

// Dynamic reports whether the template's envs run as uids of their own.
func (t *Template) Dynamic() bool { return t.dynamic }

// Credential is the uid and gid a named User resolved to; ok is false
// for the gateway's own user and for DynamicUser.
func (t *Template) Credential() (uid, gid uint32, ok bool) {
	if t.cred == nil {
		return 0, 0, false
	}
	return t.cred.uid, t.cred.gid, true
}
