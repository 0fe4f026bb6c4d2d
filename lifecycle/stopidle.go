package lifecycle

// StopIdle stops env name if it runs and nothing is in flight (requests,
// connections, streams), and waits for the stop. It reports whether it
// stopped it; false when the env is not running or busy: callers that
// want the env restarted once its requests are done (a push that moved
// its code) try again later, and force it with Stop past a deadline.
func (m *Manager) StopIdle(name, reason string) bool {
	m.mu.Lock()
	e := m.envs[name]
	if !m.closed {
		// Close waits for it (supWG) before it settles the network.
		m.supWG.Add(1)
		defer m.supWG.Done()
	}
	m.mu.Unlock()
	if e == nil {
		return false
	}
	return m.stop(e, reason, false, false)
}
