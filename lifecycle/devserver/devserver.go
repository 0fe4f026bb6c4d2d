// Package devserver runs envs' dev servers for lifecycle.Manager: it
// implements lifecycle.Launcher (and Adopter, LogKeeper, Sweeper). It
// spawns each dev server inside its env's sandbox, as the env's user
// (a uid per env for dynamic users) with no_new_privs, in a cgroup of its
// own with the template's limits, with rlimits and, isolated, in pid and
// mount namespaces of its own; it captures the output (and keeps it on
// disk), probes the server until it is ready, and runs the template's
// prepare steps in the env's checkout before it starts.
//
// What must happen inside the new process before the dev server runs is
// the trampoline's (package trampoline): cmd/envgate-init when it sits
// next to the gateway's binary, else the gateway's own binary again,
// whose main must then start with
//
//	if trampoline.IsTrampoline() {
//		trampoline.Run()
//	}
//
// (devserver.IsTrampoline and devserver.RunTrampoline say the same). So
// must the TestMain of every test package that starts dev servers.
//
// It decides nothing about when envs start or stop: that is lifecycle's.
package devserver

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver/trampoline"
	"github.com/rs/zerolog"
)

// Config configures a Launcher. The zero value runs dev servers as the
// gateway's own user, without cgroups, isolation or log files.
type Config struct {
	// DataRoot is the Manager's (lifecycle.Config.DataRoot): isolated
	// envs still see it where it lies under /tmp.
	DataRoot string
	// CgroupParent, if set, is the cgroup (a path below the hierarchy
	// roots, such as "envgate/prod") under which each env gets a cgroup
	// of its own, with its template's Resources as limits; its memory use
	// then picks eviction victims. Required by templates with Resources.
	CgroupParent string
	// Users is the range the uids of dynamic users (templates with User
	// lifecycle.DynamicUser) come from; default DefaultUIDRange. Two
	// gateways on one machine need ranges that do not overlap.
	Users UIDRange
	// Isolate runs each dev server in pid and mount namespaces of its own
	// (which needs root): it sees only its own processes, has a private
	// /tmp and /dev/shm, and the trampoline is the init of its pid
	// namespace. Default false: the host's.
	Isolate bool
	// Mounts, if set, lists what an isolated env sees besides the host's
	// own file system, bound read-only: files or directories of the host,
	// or files of its own with a given content (its /etc/resolv.conf,
	// say). Called at each start, after the sandbox is made.
	Mounts func(env string, sb lifecycle.Sandbox) []BindMount
	// LogDir, if set, keeps each env's output in LogDir/<env>.log, each
	// line prefixed with its time (lifecycle.LogTimeFormat), rotated when
	// it passes LogMaxSize MiB (default 10), with LogMaxBackups old files
	// (default 2). The files outlive stops and gateway restarts;
	// RemoveLogs (the Manager's Destroy) removes them.
	LogDir        string
	LogMaxSize    int
	LogMaxBackups int
	// Checkouts, when set, gives each env a checkout of its code before
	// each start (lifecycle.Vars.Checkout), where the template's
	// PrepareSteps run. Default nil: no checkouts.
	Checkouts lifecycle.Checkouts
	// InitPath is the trampoline binary (cmd/envgate-init). Default:
	// envgate-init in the directory of the running executable, if it is
	// there; else the running executable itself (see the package doc).
	InitPath string
	// Log receives what the launcher itself has to say (the env's own
	// messages go to each request's Log).
	Log zerolog.Logger
}

// BindMount is what an isolated env sees, read-only, at Target: a file
// or directory of the host (Source), or a file of its own (Content).
type BindMount = trampoline.BindMount

// Launcher runs dev servers. Its methods are safe for concurrent use.
type Launcher struct {
	cfg  Config
	uids *uidAllocator
	init *initBinary
}

var (
	_ lifecycle.Launcher        = (*Launcher)(nil)
	_ lifecycle.Adopter         = (*Launcher)(nil)
	_ lifecycle.LogKeeper       = (*Launcher)(nil)
	_ lifecycle.Sweeper         = (*Launcher)(nil)
	_ lifecycle.TemplateChecker = (*Launcher)(nil)
	_ lifecycle.Recorded        = (*process)(nil)
)

// New returns a Launcher. Close it when the Manager is closed.
func New(cfg Config) (*Launcher, error) {
	if cfg.LogDir != "" {
		// 0700: an env's output is for the gateway's operators only.
		if err := os.MkdirAll(cfg.LogDir, 0o700); err != nil {
			return nil, fmt.Errorf("devserver: log dir: %w", err)
		}
	}
	l := &Launcher{cfg: cfg, uids: newUIDAllocator(cfg.Users, cfg.DataRoot)}
	var err error
	if l.init, err = openInit(cfg.InitPath, cfg.Log); err != nil {
		return nil, err
	}
	return l, nil
}

// Close releases the trampoline binary's descriptor.
func (l *Launcher) Close() error { return l.init.close() }

// IsTrampoline reports whether this process was started as a dev server's
// trampoline; main (or TestMain) must then call RunTrampoline first.
func IsTrampoline() bool { return trampoline.IsTrampoline() }

// RunTrampoline does the trampoline's work and becomes the dev server; it
// never returns.
func RunTrampoline() { trampoline.Run() }

// CheckTemplate implements lifecycle.TemplateChecker: a template with
// Resources needs Config.CgroupParent.
func (l *Launcher) CheckTemplate(t *lifecycle.Template) error {
	if t.Resources.Any() && l.cfg.CgroupParent == "" {
		return fmt.Errorf("devserver: template %q sets resources, which need Config.CgroupParent", t.Name)
	}
	return nil
}

// Log file defaults (Config.LogMaxSize, Config.LogMaxBackups).
const (
	defaultLogMaxSize    = 10 // MiB
	defaultLogMaxBackups = 2
)

// LogFile implements lifecycle.LogKeeper.
func (l *Launcher) LogFile(env string) string {
	if l.cfg.LogDir == "" {
		return ""
	}
	return filepath.Join(l.cfg.LogDir, env+".log")
}

// RemoveLogs implements lifecycle.LogKeeper.
func (l *Launcher) RemoveLogs(env string) error { return l.diskLog(env).remove() }

// diskLog returns env's log file writer, nil without LogDir.
func (l *Launcher) diskLog(env string) *diskLog {
	if l.cfg.LogDir == "" {
		return nil
	}
	size, backups := l.cfg.LogMaxSize, l.cfg.LogMaxBackups
	if size <= 0 {
		size = defaultLogMaxSize
	}
	if backups <= 0 {
		backups = defaultLogMaxBackups
	}
	return newDiskLog(l.cfg.LogDir, env, size, backups)
}

// Sweep implements lifecycle.Sweeper: it kills and removes every env
// cgroup under CgroupParent but those of running, and then the parent if
// it is empty.
func (l *Launcher) Sweep(running []string) {
	if l.cfg.CgroupParent == "" {
		return
	}
	keep := map[string]bool{}
	for _, name := range running {
		keep[envCgroupPath(l.cfg.CgroupParent, name)] = true
	}
	removed, err := removeCgroups(l.cfg.CgroupParent, keep)
	for _, p := range removed {
		l.cfg.Log.Warn().Str("cgroup", p).Msg("removed a cgroup left behind by an earlier run")
	}
	if err != nil {
		l.cfg.Log.Error().Err(err).Msg("remove cgroups left behind")
	}
	if len(running) == 0 {
		removeCgroupParent(l.cfg.CgroupParent)
	}
}
