package devserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/envgate/envgate/lifecycle"
)

// preparedFile, in an env's data dir, holds the commit whose prepare
// steps last succeeded.
const preparedFile = ".envgate-prepared"

// errPrepareTimeout ends a checkout's context at Template.PrepareTimeout.
var errPrepareTimeout = errors.New("prepare timed out")

// checkout brings the env's checkout up to date and runs the template's
// prepare steps in it when its commit changed since they last succeeded,
// all within the template's PrepareTimeout. It returns the checkout's
// directory, "" without Config.Checkouts.
func (l *Launcher) checkout(ctx context.Context, req lifecycle.LaunchRequest, cred *credential, disk *diskLog) (string, error) {
	if l.cfg.Checkouts == nil {
		return "", nil
	}
	ctx, cancel := context.WithTimeoutCause(ctx, req.Template.PrepareTimeout, errPrepareTimeout)
	defer cancel()
	uid, gid := os.Getuid(), os.Getgid()
	if cred != nil {
		uid, gid = int(cred.UID), int(cred.GID)
	}
	dir, commit, err := l.cfg.Checkouts.Checkout(ctx, req.Env, uid, gid)
	if err != nil {
		return "", fmt.Errorf("checkout: %w", err)
	}
	if len(req.Template.PrepareSteps) == 0 {
		return dir, nil
	}
	marker := filepath.Join(req.DataDir, preparedFile)
	if b, err := os.ReadFile(marker); err == nil && strings.TrimSpace(string(b)) == commit {
		return dir, nil
	}
	req.Output.WriteLine(fmt.Appendf(nil, "envgate: updating to %.7s: running its prepare steps", commit))
	if req.Updating != nil {
		req.Updating(commit)
		defer req.Updating("")
	}
	for _, step := range req.Template.PrepareSteps {
		if err := l.prepareStep(ctx, req, cred, disk, dir, step); err != nil {
			var pe *lifecycle.PrepareError
			if errors.As(err, &pe) {
				pe.Commit = commit
			}
			req.Output.WriteLine(fmt.Appendf(nil, "envgate: %v", err))
			return "", err
		}
	}
	if err := writeMarker(req.DataDir, commit); err != nil {
		return "", fmt.Errorf("prepare: record commit: %w", err)
	}
	return dir, nil
}

// prepareStep runs one prepare step in dir, like the dev server (same
// user, sandbox, isolation and environment) but without its cgroup, and
// waits for it.
func (l *Launcher) prepareStep(ctx context.Context, req lifecycle.LaunchRequest, cred *credential, disk *diskLog, dir string, step []string) error {
	x := expanded{argv: step, dir: dir, fence: fenceOf(req)}
	l.runAs(&x, cred, req)
	base := append(baseEnv(req), "ENVGATE_CHECKOUT="+dir)
	req.Output.WriteLine(fmt.Appendf(nil, "envgate: prepare: %s", strings.Join(step, " ")))
	proc, err := l.spawn(req.Sandbox, x, base, nil, req.Output, disk, req.Log.With().Str("stream", "prepare").Logger())
	if err != nil {
		return fmt.Errorf("prepare: spawn %s: %w", step[0], err)
	}
	defer proc.Release()
	select {
	case <-proc.exited:
	case <-ctx.Done():
		proc.stop(req.Template.StopGrace)
		if context.Cause(ctx) == errPrepareTimeout {
			return &lifecycle.PrepareError{Step: step, TimedOut: true,
				Exit: fmt.Sprintf("not done within %s, the template's prepare_timeout for the checkout and all its steps", req.Template.PrepareTimeout)}
		}
		return fmt.Errorf("prepare %q: %w", strings.Join(step, " "), context.Cause(ctx))
	}
	if !proc.success() {
		return &lifecycle.PrepareError{Step: step, Exit: proc.ExitDescription()}
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
