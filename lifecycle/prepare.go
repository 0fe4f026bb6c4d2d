package lifecycle

import (
	"context"
	"fmt"
	"strings"
)

// Checkouts gives envs their code: a checkout of the env's branch made or
// moved to the branch's head before each start. lifecycle knows nothing
// of where the code comes from (lifecycle/sources does); the launcher
// (devserver.Config.Checkouts) asks for it and runs the template's
// PrepareSteps in it.
type Checkouts interface {
	// Checkout makes env's checkout, or moves it to its branch's newest
	// commit, owned by uid:gid, and returns its directory and commit.
	Checkout(ctx context.Context, env string, uid, gid int) (dir, commit string, err error)
}

// PrepareError is a failed prepare step; the env's output holds what the
// step printed.
type PrepareError struct {
	Step   []string
	Commit string
	Exit   string // "exit status 1", or what ran out of time
	// TimedOut: the step was stopped at Template.PrepareTimeout.
	TimedOut bool
}

func (e *PrepareError) Error() string {
	return fmt.Sprintf("prepare step %q on %.12s: %s", strings.Join(e.Step, " "), e.Commit, e.Exit)
}

// setUpdating records the commit whose prepare steps run now ("" once
// they are done), for Progress; the launcher calls it (LaunchRequest's
// Updating).
func (e *env) setUpdating(commit string) {
	e.mu.Lock()
	e.updating = commit
	e.mu.Unlock()
}
