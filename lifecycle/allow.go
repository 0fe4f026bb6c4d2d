package lifecycle

import "fmt"

// Allowed reports whether Acquire could run env name, without starting it
// or recording it: nil if the env is already known or a template matches
// and Config.Allow (if set) accepts it, else an error wrapping ErrNoTemplate
// or ErrNotAllowed. The certificate layer asks it during TLS handshakes
// before ordering a certificate, so it does no I/O of its own; it is as
// fast as Config.Allow.
func (m *Manager) Allowed(name string) error {
	m.mu.Lock()
	_, known := m.envs[name]
	m.mu.Unlock()
	if known {
		// Acquire serves a known env without asking again; a certificate
		// for it must not be refused either.
		return nil
	}
	if m.templateFor(name) == nil || m.reservedName(name) {
		return fmt.Errorf("%w: %s", ErrNoTemplate, name)
	}
	if m.cfg.Allow != nil {
		if err := m.cfg.Allow(name); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrNotAllowed, name, err)
		}
	}
	return nil
}

// templateFor is the first template matching name, or nil.
func (m *Manager) templateFor(name string) *Template {
	for _, t := range m.cfg.Templates {
		if t.Matches(name) {
			return t
		}
	}
	return nil
}
