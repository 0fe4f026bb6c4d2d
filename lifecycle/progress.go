package lifecycle

import "time"

// Progress is a snapshot of how an env's start is going, for a page that
// waits on it.
type Progress struct {
	State State
	// StartedAt is when the current (or last) start began; zero if the
	// env never started.
	StartedAt time.Time
	// Tail is the newest lines of the dev server's output.
	Tail []string
	// Failure is why the last start failed, when State is Failed.
	Failure *StartError
	// Updating is the commit the env's checkout is being prepared at
	// (its prepare steps run), "" when none run.
	Updating string
	// Template runs the env. Callers must not modify it.
	Template *Template
}

// Progress reports how env name is doing without starting it or waiting
// for anything, with up to tail lines of its output. Errors are those of
// Acquire's lookup: ErrNoTemplate, ErrNotAllowed, ErrClosed.
func (m *Manager) Progress(name string, tail int) (Progress, error) {
	m.mu.Lock()
	e, known := m.envs[name]
	closed := m.closed
	m.mu.Unlock()
	if !known {
		// Asking about an env must not make one: report what a start
		// would use, and remember nothing.
		if closed {
			return Progress{}, ErrClosed
		}
		if err := m.Allowed(name); err != nil {
			return Progress{}, err
		}
		return Progress{State: Stopped, Template: m.templateFor(name)}, nil
	}
	// A waiting page polls: a start it waits for is still wanted.
	e.polledAt.Store(time.Now().UnixNano())
	e.mu.Lock()
	p := Progress{State: e.State(), StartedAt: e.startedAt, Template: e.tmpl, Updating: e.updating}
	if p.State == Failed && e.failure != nil {
		f := *e.failure
		p.Failure = &f
	}
	e.mu.Unlock()
	if tail > 0 {
		p.Tail = e.out.Tail(tail)
	}
	return p, nil
}

// Template is the template the leased env runs from, or nil for a Lease
// made outside a Manager (as test fakes do). Callers must not modify it.
func (l *Lease) Template() *Template {
	if l.e == nil {
		return nil
	}
	return l.e.tmpl
}
