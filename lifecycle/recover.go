package lifecycle

import (
	"errors"
	"fmt"
)

// Recover deals with the envs that an earlier process of this gateway
// recorded in Config.StateFile and left running when it died. A record
// is acted on only if its process passes the launcher's check (an
// Adopter's: with devserver, pid above 1, leading its group, inside the
// recorded network namespace). With adopt,
// each env whose dev server is still alive (same pid and start time),
// whose template is unchanged and whose sandbox is intact is taken over
// as TakeOver does: it answers at once, with no new start. Every other
// recorded dev server is killed (its process group). Call it once, right
// after New and before serving; then remove every sandbox not named in
// adopted (netns.Manager.GC with keep). Without adopt (on_restart: clean)
// it kills them all and adopts nothing.
func (m *Manager) Recover(adopt bool) (adopted []string, err error) {
	if m.cfg.StateFile == "" {
		return nil, nil
	}
	ad, ok := m.cfg.Launcher.(Adopter)
	if !ok {
		return nil, errors.New("lifecycle: recover: the launcher cannot check or adopt dev servers")
	}
	st, err := readState(m.cfg.StateFile)
	if err != nil {
		// Unreadable: adopt nothing. The caller's GC removes the sandboxes,
		// and with them every process inside.
		m.log.Error().Err(err).Msg("ignoring the state file; recorded envs are cleaned, not adopted")
	}
	var errs []error
	for _, r := range st.Envs {
		log := m.log.With().Str("env", r.Name).Int("pid", r.Pid).Logger()
		rec := r.process()
		if err := ad.Check(rec); errors.Is(err, ErrProcessGone) {
			log.Info().Msg("recorded env's dev server is gone")
			continue
		} else if err != nil {
			// Neither signalled nor adopted: the caller's GC removes this
			// instance's sandboxes and whatever runs inside them.
			log.Warn().Err(err).Msg("not signalling or adopting the process of a recorded env")
			continue
		}
		if !adopt {
			ad.KillRecorded(rec)
			log.Info().Msg("on_restart clean: killed the recorded env's dev server")
			continue
		}
		if err := m.adopt(ad, r); err != nil {
			ad.KillRecorded(rec)
			log.Warn().Err(err).Msg("could not adopt the recorded env; killed its dev server, it will start afresh")
			errs = append(errs, fmt.Errorf("lifecycle: adopt %s: %w", r.Name, err))
			continue
		}
		adopted = append(adopted, r.Name)
	}
	if sw, ok := m.cfg.Launcher.(Sweeper); ok {
		sw.Sweep(adopted)
	}
	m.saveState()
	return adopted, errors.Join(errs...)
}

// adopt takes over the running env r through TakeOver, after pinning its
// process (a pidfd) and reopening its output pipe.
func (m *Manager) adopt(ad Adopter, r stateRecord) error {
	out, pidfd, err := ad.Pin(r.process())
	if err != nil {
		return err
	}
	h := HandedEnv{Name: r.Name, Template: r.Template, Pid: r.Pid, StartedAt: r.StartedAt, ReadyAt: r.ReadyAt, Output: out, PidFD: pidfd}
	// TakeOver closes the files when it fails.
	if err := m.TakeOver([]HandedEnv{h}); err != nil {
		return err
	}
	e, err := m.lookup(r.Name)
	if err != nil {
		return err
	}
	if a := e.addr.Load(); a == nil || *a != r.Addr {
		// Unreachable where the record says: a sandbox not ours, or renumbered.
		m.Stop(r.Name, "adopted env is not at its recorded address")
		return fmt.Errorf("sandbox address %v, recorded %v", a, r.Addr)
	}
	return nil
}
