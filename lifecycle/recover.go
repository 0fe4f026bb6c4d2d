package lifecycle

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Recover deals with the envs that an earlier process of this gateway
// recorded in Config.StateFile and left running when it died. A record
// is acted on only if its process passes checkRecorded (pid above 1,
// leading its group, inside the recorded network namespace). With adopt,
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
	st, err := readState(m.cfg.StateFile)
	if err != nil {
		// Unreadable: adopt nothing. The caller's GC removes the sandboxes,
		// and with them every process inside.
		m.log.Error().Err(err).Msg("ignoring the state file; recorded envs are cleaned, not adopted")
	}
	var errs []error
	for _, r := range st.Envs {
		log := m.log.With().Str("env", r.Name).Int("pid", r.Pid).Logger()
		if start, err := pidStartTime(r.Pid); err != nil || start != r.PidStart {
			log.Info().Msg("recorded env's dev server is gone")
			continue
		}
		if err := checkRecorded(r); err != nil {
			// Neither signalled nor adopted: the caller's GC removes this
			// instance's sandboxes and whatever runs inside them.
			log.Warn().Err(err).Msg("not signalling or adopting the process of a recorded env")
			continue
		}
		if !adopt {
			killGroup(r)
			log.Info().Msg("on_restart clean: killed the recorded env's dev server")
			continue
		}
		if err := m.adopt(r); err != nil {
			killGroup(r)
			log.Warn().Err(err).Msg("could not adopt the recorded env; killed its dev server, it will start afresh")
			errs = append(errs, fmt.Errorf("lifecycle: adopt %s: %w", r.Name, err))
			continue
		}
		adopted = append(adopted, r.Name)
	}
	m.removeStrayCgroups()
	m.saveState()
	return adopted, errors.Join(errs...)
}

// adopt takes over the running env r through TakeOver, after pinning its
// process with a pidfd and reopening its output pipe.
func (m *Manager) adopt(r stateRecord) error {
	fd, err := unix.PidfdOpen(r.Pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd: %w", err)
	}
	pidfd := os.NewFile(uintptr(fd), "pidfd-"+r.Name)
	// The pidfd pins this very process: check again that it is the one
	// recorded, not a successor that got the pid in between.
	if start, err := pidStartTime(r.Pid); err != nil || start != r.PidStart {
		pidfd.Close()
		return errors.New("the process exited while being adopted")
	}
	out, err := reopenOutput(r.Pid)
	if err != nil {
		pidfd.Close()
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

// reopenOutput opens a new read end of pid's output pipe through the
// descriptor the dev server itself holds (outputFD), after checking that
// it is the pipe its stdout writes to.
func reopenOutput(pid int) (*os.File, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	var rd, wr syscall.Stat_t
	if err := syscall.Stat(dir+strconv.Itoa(outputFD), &rd); err != nil {
		return nil, fmt.Errorf("output pipe: %w", err)
	}
	if err := syscall.Stat(dir+"1", &wr); err != nil {
		return nil, fmt.Errorf("output pipe: %w", err)
	}
	if rd.Mode&syscall.S_IFMT != syscall.S_IFIFO || rd.Ino != wr.Ino || rd.Dev != wr.Dev {
		return nil, errors.New("output pipe: the dev server's descriptors are not the gateway's pipe")
	}
	f, err := os.OpenFile(dir+strconv.Itoa(outputFD), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("output pipe: %w", err)
	}
	return f, nil
}

// killGroup SIGKILLs the process group of a recorded env. The sandbox GC
// that follows kills whatever left the group (setsid).
func killGroup(r stateRecord) { signalGroup(r.Pid, syscall.SIGKILL) }
