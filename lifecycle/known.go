package lifecycle

// Known reports whether env name has an entry in the manager (starting,
// ready, stopping, stopped or failed), without making one or asking the
// source. The gateway's per-client limit of new envs counts only
// requests for names that are not known.
func (m *Manager) Known(name string) bool {
	m.mu.Lock()
	_, ok := m.envs[name]
	if !ok {
		_, ok = m.handed[name]
	}
	m.mu.Unlock()
	return ok
}
