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
	// ErrAtCapacity means a start would pass a limit and nothing could be
	// evicted to make room. The error is a *CapacityError.
	ErrAtCapacity = errors.New("lifecycle: at capacity")
)

// TemplateError is a Template field that Template.Prepare refuses.
type TemplateError struct {
	// Field is the field's key as a config writes it: name, command[0],
	// ready.http, ports.web, env.HOME.
	Field string
	Err   error
}

func (e *TemplateError) Error() string { return e.Field + ": " + e.Err.Error() }

func (e *TemplateError) Unwrap() error { return e.Err }

// fieldError is a *TemplateError for field, its message as fmt.Errorf's.
func fieldError(field, format string, args ...any) error {
	return &TemplateError{Field: field, Err: fmt.Errorf(format, args...)}
}

// CapacityError refuses a start because a limit is reached and no idle
// env could be evicted, the start queue is full, or no room was made
// within the start timeout. The gateway turns it into 503 with
// Retry-After. errors.Is(err, ErrAtCapacity) holds.
type CapacityError struct {
	Env string
	// Limit is the limit's config key: max_envs, max_starting,
	// max_queued_starts or min_available_memory.
	Limit      string
	Detail     string        // one line, for people
	RetryAfter time.Duration // a hint for clients
}

func (e *CapacityError) Error() string {
	return fmt.Sprintf("lifecycle: env %s: at capacity (%s): %s", e.Env, e.Limit, e.Detail)
}

// Is makes errors.Is(err, ErrAtCapacity) true.
func (e *CapacityError) Is(target error) bool { return target == ErrAtCapacity }

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

// ErrRecordRefused means a state file record names a process that Recover
// will neither adopt nor signal.
var ErrRecordRefused = errors.New("refused state file record")
