package lifecycle

import (
	"errors"
	"strings"
	"time"
)

// Observer is told of lifecycle events, for metrics. Its methods are
// called on the manager's goroutines (never on the warm request path)
// and must return quickly.
type Observer interface {
	// Started: env got ready. The phases add up to the whole start.
	Started(env string, p StartPhases)
	// StartFailed: a start of env failed (timeout: it was not ready in
	// time) or the dev server crashed.
	StartFailed(env string, timeout bool)
	// Refused: a start was refused at capacity; limit is the
	// CapacityError's (max_envs, max_starting, max_queued_starts,
	// min_available_memory).
	Refused(env, limit string)
	// Stopped: a running env was stopped, for cause (see StopCause).
	Stopped(env, cause string)
}

// StartPhases splits a start's time.
type StartPhases struct {
	// Wait is the time in the start queue and admission (a MaxStarting
	// turn, a MaxEnvs slot, evictions to make room).
	Wait time.Duration
	// Setup is the gateway's own work: the sandbox (or a warm one taken),
	// the data dir, the cgroup and the spawn.
	Setup time.Duration
	// Boot is the dev server's: from the spawn until its readiness probe
	// succeeded.
	Boot time.Duration
}

// The causes Observer.Stopped reports: a small fixed set, fit for a
// metric label.
const (
	StopIdle        = "idle"
	StopMaxLifetime = "max_lifetime"
	StopEvictEnvs   = "evicted_max_envs"
	StopEvictMemory = "evicted_memory"
	StopCrashed     = "crashed"
	StopOperator    = "operator"
	StopOther       = "other"
)

// StopCause maps a stop's reason, as the manager words it for its log,
// to one of the Stop* causes. The reasons are all made in this package
// (reapReason, the evictions, the admin methods); the table test in
// observe_test.go holds them together.
func StopCause(reason string) string {
	switch {
	case strings.HasPrefix(reason, "idle for "):
		return StopIdle
	case strings.HasPrefix(reason, "max_lifetime"):
		return StopMaxLifetime
	case strings.HasPrefix(reason, "evicted: max_envs"):
		return StopEvictEnvs
	case strings.HasPrefix(reason, "evicted: min_available_memory"):
		return StopEvictMemory
	case strings.HasSuffix(reason, "asked by an operator"):
		return StopOperator
	}
	return StopOther
}

// observer returns Config.Observer or one that ignores everything.
func (m *Manager) observer() Observer {
	if m.cfg.Observer != nil {
		return m.cfg.Observer
	}
	return nopObserver{}
}

// observeRefusal reports err to the observer if it is a *CapacityError.
func (m *Manager) observeRefusal(e *env, err error) {
	if ce, ok := errors.AsType[*CapacityError](err); ok {
		m.observer().Refused(e.name, ce.Limit)
	}
}

type nopObserver struct{}

func (nopObserver) Started(string, StartPhases) {}
func (nopObserver) StartFailed(string, bool)    {}
func (nopObserver) Refused(string, string)      {}
func (nopObserver) Stopped(string, string)      {}
