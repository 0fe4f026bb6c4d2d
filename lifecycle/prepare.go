package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Checkouts gives envs their code: a checkout of the env's branch made or
// moved to the branch's head before each start. lifecycle knows nothing
// of where the code comes from (lifecycle/sources does).
type Checkouts interface {
	// Checkout makes env's checkout, or moves it to its branch's newest
	// commit, owned by uid:gid, and returns its directory and commit.
	Checkout(ctx context.Context, env string, uid, gid int) (dir, commit string, err error)
}

// preparedFile, in an env's data dir, holds the commit whose prepare
// steps last succeeded.
const preparedFile = ".envgate-prepared"

// PrepareError is a failed prepare step; the env's output holds what the
// step printed.
type PrepareError struct {
	Step   []string
	Commit string
	Exit   string // "exit status 1", or what ran out of time
	// TimedOut: the step was stopped at Template.PrepareTimeout.
	TimedOut bool
}

// errPrepareTimeout ends a checkout's context at Template.PrepareTimeout.
var errPrepareTimeout = errors.New("prepare timed out")

func (e *PrepareError) Error() string {
	return fmt.Sprintf("prepare step %q on %.12s: %s", strings.Join(e.Step, " "), e.Commit, e.Exit)
}

// checkout brings e's checkout up to date and runs the template's prepare
// steps in it when its commit changed since they last succeeded, all
// within the template's PrepareTimeout. It returns the checkout's
// directory, "" without Config.Checkouts.
func (m *Manager) checkout(e *env, sb Sandbox, cred *credential) (string, error) {
	if m.cfg.Checkouts == nil {
		return "", nil
	}
	ctx, cancel := context.WithTimeoutCause(m.ctx, e.tmpl.PrepareTimeout, errPrepareTimeout)
	defer cancel()
	uid, gid := os.Getuid(), os.Getgid()
	if cred != nil {
		uid, gid = int(cred.uid), int(cred.gid)
	}
	dir, commit, err := m.cfg.Checkouts.Checkout(ctx, e.name, uid, gid)
	if err != nil {
		return "", fmt.Errorf("checkout: %w", err)
	}
	if len(e.tmpl.PrepareSteps) == 0 {
		return dir, nil
	}
	marker := filepath.Join(e.dataDir, preparedFile)
	if b, err := os.ReadFile(marker); err == nil && strings.TrimSpace(string(b)) == commit {
		return dir, nil
	}
	e.out.writeLine(fmt.Appendf(nil, "envgate: updating to %.7s: running its prepare steps", commit))
	e.setUpdating(commit)
	defer e.setUpdating("")
	for _, step := range e.tmpl.PrepareSteps {
		if err := m.prepareStep(ctx, e, sb, cred, dir, step); err != nil {
			var pe *PrepareError
			if errors.As(err, &pe) {
				pe.Commit = commit
			}
			e.out.writeLine(fmt.Appendf(nil, "envgate: %v", err))
			return "", err
		}
	}
	if err := writeMarker(e.dataDir, commit); err != nil {
		return "", fmt.Errorf("prepare: record commit: %w", err)
	}
	return dir, nil
}

// prepareStep runs one prepare step in dir, like the dev server (same
// user, sandbox, isolation and environment) but without its cgroup, and
// waits for it.
func (m *Manager) prepareStep(ctx context.Context, e *env, sb Sandbox, cred *credential, dir string, step []string) error {
	x := expanded{argv: step, dir: dir}
	m.runAs(&x, cred, e, sb)
	base := append(e.baseEnv(), "ENVGATE_CHECKOUT="+dir)
	e.out.writeLine(fmt.Appendf(nil, "envgate: prepare: %s", strings.Join(step, " ")))
	proc, err := spawn(sb, x, base, nil, e.out, e.log.With().Str("stream", "prepare").Logger())
	if err != nil {
		return fmt.Errorf("prepare: spawn %s: %w", step[0], err)
	}
	defer proc.release(e.log)
	select {
	case <-proc.exited:
	case <-ctx.Done():
		proc.stop(e.tmpl.StopGrace, false)
		if context.Cause(ctx) == errPrepareTimeout {
			return &PrepareError{Step: step, TimedOut: true,
				Exit: fmt.Sprintf("not done within %s, the template's prepare_timeout for the checkout and all its steps", e.tmpl.PrepareTimeout)}
		}
		return fmt.Errorf("prepare %q: %w", strings.Join(step, " "), context.Cause(ctx))
	}
	if proc.state == nil || !proc.state.Success() {
		return &PrepareError{Step: step, Exit: proc.exitDescription()}
	}
	return nil
}

// writeMarker records commit in dataDir. The data dir belongs to the env's
// user, so the file is made fresh (O_EXCL, never through a link the user
// planted) and renamed into place.
func writeMarker(dataDir, commit string) error {
	f, err := os.CreateTemp(dataDir, preparedFile+".*")
	if err != nil {
		return err
	}
	_, werr := f.WriteString(commit + "\n")
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), filepath.Join(dataDir, preparedFile))
}

// setUpdating records the commit whose prepare steps run now ("" once
// they are done), for Progress.
func (e *env) setUpdating(commit string) {
	e.mu.Lock()
	e.updating = commit
	e.mu.Unlock()
}
