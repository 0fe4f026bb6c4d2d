package lifecycle

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

var (
	// ErrNoTemplate means no template matches the env name.
	ErrNoTemplate = errors.New("lifecycle: no template matches this env")
	// ErrNotAllowed means the env source does not allow the name.
	ErrNotAllowed = errors.New("lifecycle: env not allowed")
	// ErrClosed means the manager is shutting down.
	ErrClosed = errors.New("lifecycle: shutting down")
)

// StartError says why an env failed to start (or crashed). The gateway
// shows it on its 502/504 page.
type StartError struct {
	Env     string
	Reason  string    // one line, for people
	Timeout bool      // the start timed out (504) rather than failed (502)
	Tail    []string  // last lines of the dev server's output
	RetryAt time.Time // no new start before this; zero if a retry may start now
	Err     error     // underlying cause, if any
}

func (e *StartError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "lifecycle: env %s: %s", e.Env, e.Reason)
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *StartError) Unwrap() error { return e.Err }
