package devserver

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver/trampoline"
	"github.com/envgate/envgate/netns"
	"golang.org/x/sys/unix"
)

// credential is who a dev server runs as.
type credential = trampoline.Cred

// rlimit is one of a dev server's rlimits.
type rlimit = trampoline.Rlimit

// ownDataDir makes the env's data dir (already made, 0700) belong to the
// user the env runs as, and returns that user: the template's, or for a
// dynamic user the env's own uid (with a gid of the same number).
func (l *Launcher) ownDataDir(req lifecycle.LaunchRequest) (*credential, error) {
	var c *credential
	if uid, gid, ok := req.Template.Credential(); ok {
		c = &credential{UID: uid, GID: gid}
	}
	if req.Template.Dynamic() {
		uid, err := l.uids.assign(req.Env)
		if err != nil {
			return nil, err
		}
		c = &credential{UID: uid, GID: uid}
	}
	if c == nil {
		return nil, nil
	}
	// The data dir is the env's: its user must be able to write it.
	if err := os.Chown(req.DataDir, int(c.UID), int(c.GID)); err != nil {
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
func (l *Launcher) runAs(x *expanded, cred *credential, req lifecycle.LaunchRequest) {
	x.cred = cred
	t := req.Template
	lim := t.RLimits
	if l.cfg.Isolate {
		x.iso = &isolation{tmpSize: t.TmpSize}
		if x.iso.tmpSize == 0 {
			x.iso.tmpSize = lifecycle.DefaultTmpSize
		}
		prog := x.argv[0]
		if !strings.Contains(prog, "/") {
			prog, _ = exec.LookPath(prog)
		}
		// The whole data root (0711), as the env would see it outside /tmp;
		// and files under /tmp the command names, even inside a script
		// (sh -c "exec /tmp/x/server").
		for _, p := range append([]string{l.cfg.DataRoot, x.dir, prog}, tmpPathsIn(x)...) {
			if !filepath.IsAbs(p) {
				continue
			}
			r, err := filepath.EvalSymlinks(p)
			if err != nil || !underTmp(r) || slices.ContainsFunc(x.iso.keep, func(k string) bool { return within(r, k) }) {
				continue
			}
			x.iso.keep = append(x.iso.keep, r)
		}
		if l.cfg.Mounts != nil {
			x.iso.binds = l.cfg.Mounts(req.Env, req.Sandbox)
		}
		if lim.OpenFiles == 0 {
			lim.OpenFiles = lifecycle.DefaultOpenFiles
		}
	}
	if t.Dynamic() && lim.Processes == 0 {
		lim.Processes = lifecycle.DefaultProcesses
	}
	if lim.OpenFiles > 0 {
		x.rlimits = append(x.rlimits, rlimit{Resource: syscall.RLIMIT_NOFILE, Max: lim.OpenFiles})
	}
	if lim.Processes > 0 {
		x.rlimits = append(x.rlimits, rlimit{Resource: unix.RLIMIT_NPROC, Max: lim.Processes})
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
	if cred == nil || cred.UID == 0 {
		return false
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: cred.UID, Gid: cred.GID, Groups: []uint32{}}
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

// underTmp reports whether p lies in /tmp, which an isolated env's
// private /tmp hides.
func underTmp(p string) bool { return within(p, "/tmp") }

// within reports whether path p is dir or inside it.
func within(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// trampolineProcsVar is the Go runtime's variable the trampoline starts
// with, set to 1 unless the template sets it for its dev server.
const trampolineProcsVar = "GOMAXPROCS"

// viaTrampoline makes cmd start through the trampoline binary, if sp asks
// for anything it alone can do.
func (l *Launcher) viaTrampoline(cmd *exec.Cmd, sp trampoline.Spec) {
	if cmd.Err != nil || !sp.NNP && len(sp.Cgroups) == 0 && len(sp.Rlimits) == 0 && !sp.Init {
		return // Start reports the failed path lookup
	}
	sp.Path = cmd.Path
	if !slices.ContainsFunc(cmd.Env, func(kv string) bool { return strings.HasPrefix(kv, trampolineProcsVar+"=") }) {
		// The trampoline's own runtime gets one P (fewer threads to make
		// at its start, and an init that only waits needs no more); the
		// variable is gone before the dev server runs.
		cmd.Env = append(cmd.Env, trampolineProcsVar+"=1")
		sp.Unset = []string{trampolineProcsVar}
	}
	b, err := json.Marshal(sp)
	if err != nil {
		cmd.Err = fmt.Errorf("devserver: launch spec: %w", err)
		return
	}
	cmd.Env = append(cmd.Env, trampoline.EnvVar+"="+string(b))
	// Through a descriptor (/proc/self/fd/N or /proc/self/exe), not the
	// binary's path: the directories on the way to it need not be open
	// to the dev server's user (see initBinary).
	cmd.Path = l.init.path
}
