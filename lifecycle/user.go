package lifecycle

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/envgate/envgate/netns"
	"golang.org/x/sys/unix"
)

// DynamicUser is the Template.User that runs each env as a uid of its
// own, from Config.Users (like systemd's DynamicUser).
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

// ownDataDir makes e's data dir (already made, 0700) belong to the user
// e runs as, and returns that user: the template's, or for a dynamic
// user the env's own uid (with a gid of the same number).
func (m *Manager) ownDataDir(e *env) (*credential, error) {
	c := e.tmpl.cred
	if e.tmpl.dynamic {
		uid, err := m.uids.assign(e.name)
		if err != nil {
			return nil, err
		}
		c = &credential{uid, uid}
	}
	if c == nil {
		return nil, nil
	}
	// The data dir is the env's: its user must be able to write it.
	if err := os.Chown(e.dataDir, int(c.uid), int(c.gid)); err != nil {
		return nil, err
	}
	return c, nil
}

// isolation is how an isolated env's namespaces are set up.
type isolation struct {
	tmpSize int64
	keep    []string // paths under /tmp the env must still see
	binds   []BindMount
}

// runAs fills in who x runs as, its rlimits and, with Config.Isolate, its
// namespaces.
func (m *Manager) runAs(x *expanded, cred *credential, e *env, sb Sandbox) {
	x.cred = cred
	lim := e.tmpl.RLimits
	if m.cfg.Isolate {
		x.iso = &isolation{tmpSize: e.tmpl.TmpSize}
		if x.iso.tmpSize == 0 {
			x.iso.tmpSize = DefaultTmpSize
		}
		prog := x.argv[0]
		if !strings.Contains(prog, "/") {
			prog, _ = exec.LookPath(prog)
		}
		// The whole data root (0711), as the env would see it outside /tmp;
		// and files under /tmp the command names, even inside a script
		// (sh -c "exec /tmp/x/server").
		for _, p := range append([]string{m.cfg.DataRoot, x.dir, prog}, tmpPathsIn(x)...) {
			if !filepath.IsAbs(p) {
				continue
			}
			r, err := filepath.EvalSymlinks(p)
			if err != nil || !underTmp(r) || slices.ContainsFunc(x.iso.keep, func(k string) bool { return within(r, k) }) {
				continue
			}
			x.iso.keep = append(x.iso.keep, r)
		}
		if m.cfg.Mounts != nil {
			x.iso.binds = m.cfg.Mounts(e.name, sb)
		}
		if lim.OpenFiles == 0 {
			lim.OpenFiles = DefaultOpenFiles
		}
	}
	if e.tmpl.dynamic && lim.Processes == 0 {
		lim.Processes = DefaultProcesses
	}
	if lim.OpenFiles > 0 {
		x.rlimits = append(x.rlimits, rlimit{syscall.RLIMIT_NOFILE, lim.OpenFiles})
	}
	if lim.Processes > 0 {
		x.rlimits = append(x.rlimits, rlimit{unix.RLIMIT_NPROC, lim.Processes})
	}
}

// hiddenMounts are the host mounts an isolated env's mount namespace
// drops.
func hiddenMounts() []string { return []string{netns.RunDir} }

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

// tmpPathsIn returns the words of x's argv and env values that are paths
// under /tmp.
func tmpPathsIn(x *expanded) []string {
	var out []string
	add := func(s string) {
		if !strings.Contains(s, "/tmp/") {
			return
		}
		for _, w := range strings.FieldsFunc(s, func(r rune) bool { return strings.ContainsRune(" \t\n'\";=:,()<>|&`", r) }) {
			if underTmp(w) {
				out = append(out, filepath.Clean(w))
			}
		}
	}
	for _, a := range x.argv {
		add(a)
	}
	for _, v := range x.env {
		add(v)
	}
	return out
}
