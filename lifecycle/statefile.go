package lifecycle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// stateVersion is the state file's format; a file of another version is
// ignored (its envs are cleaned, not adopted).
const stateVersion = 1

// stateFile is what Config.StateFile holds: the envs running when it was
// written.
type stateFile struct {
	Version int           `json:"version"`
	Written time.Time     `json:"written"`
	Envs    []stateRecord `json:"envs"`
}

// stateRecord is one running env.
type stateRecord struct {
	Name      string         `json:"name"`
	Template  string         `json:"template"`
	Namespace string         `json:"namespace,omitempty"` // path of the sandbox, if it has one
	Addr      netip.AddrPort `json:"addr"`
	Pid       int            `json:"pid"` // leader of its process group
	// PidStart is the process's start time (clock ticks since boot, field
	// 22 of /proc/PID/stat): a pid reused by another process has another.
	PidStart  uint64    `json:"pid_start"`
	Cgroup    string    `json:"cgroup,omitempty"` // below the hierarchy roots
	StartedAt time.Time `json:"started_at"`
	ReadyAt   time.Time `json:"ready_at"`
}

// saveStateSoon has the state file rewritten off the caller's path (a
// start's waiters, a teardown): one writer at a time, changes made while
// a write is queued share it, and background writes begin at least
// stateWriteGap apart, so a burst of starts costs a few writes (each of
// every env) a second rather than one per start, or writes back to back.
// An env is on file at most about stateWriteGap after it got ready.
func (m *Manager) saveStateSoon() {
	if m.cfg.StateFile == "" || m.stateQueued.Swap(true) {
		return // not kept, or a queued write will see this change
	}
	m.stateWG.Go(func() {
		if d := time.Until(time.Unix(0, m.stateLast.Load()).Add(stateWriteGap)); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-m.ctx.Done(): // closing: write now
			}
			t.Stop()
		}
		m.stateMu.Lock()
		defer m.stateMu.Unlock()
		m.stateLast.Store(time.Now().UnixNano())
		// Cleared before the snapshot: a change after this point queues
		// another write, one before it is in this one.
		m.stateQueued.Store(false)
		m.writeStateLocked()
	})
}

// stateWriteGap is the least time between the beginnings of two
// background state writes. Each write is of every env: at 2,000 envs,
// writes back to back during a start burst took a good part of a core.
// A gateway killed within it of a start leaves that env off the file; the
// next start-up's recovery then removes it as a leftover.
const stateWriteGap = 100 * time.Millisecond

// saveState writes the state file, if configured, from the envs now
// ready, and returns when it is written.
func (m *Manager) saveState() {
	if m.cfg.StateFile == "" {
		return
	}
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	m.writeStateLocked()
}

// writeStateLocked writes the state file from the envs now ready. It goes
// to a temporary file renamed over the old one, so a crash of the gateway
// leaves the old file or the new one, never a mix. It is not fsynced: the
// file only matters to a gateway restarted on a live machine (its page
// cache intact); after a machine crash no recorded dev server is alive,
// and an unreadable file means clean, not adopt (Recover).
//
// Each env's record is encoded once, when it is first written, and kept
// with its process: a record does not change while the env runs, and
// encoding every env's at every write made each start cost time in
// proportion to the envs already running.
func (m *Manager) writeStateLocked() {
	if m.stateHanded {
		return // the file is the next process's now
	}
	type named struct {
		name string
		rec  []byte
	}
	var recs []named
	for _, e := range m.snapshot() {
		e.mu.Lock()
		if e.State() == Ready && e.proc != nil {
			if e.record == nil {
				e.record = e.recordLocked()
			}
			recs = append(recs, named{e.name, e.record})
		}
		e.mu.Unlock()
	}
	slices.SortFunc(recs, func(a, b named) int { return strings.Compare(a.name, b.name) })
	// The same document json.MarshalIndent(stateFile) would make.
	written, _ := json.Marshal(time.Now().UTC())
	size := 128
	for _, r := range recs {
		size += len(r.rec) + 6
	}
	var b bytes.Buffer
	b.Grow(size)
	fmt.Fprintf(&b, "{\n  \"version\": %d,\n  \"written\": %s,\n  \"envs\": [", stateVersion, written)
	for i, r := range recs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n    ")
		b.Write(r.rec)
	}
	if len(recs) > 0 {
		b.WriteString("\n  ")
	}
	b.WriteString("]\n}\n")
	if err := writeFileAtomic(m.cfg.StateFile, b.Bytes()); err != nil {
		m.log.Error().Err(err).Str("file", m.cfg.StateFile).Msg("cannot write the state file; a gateway restart will not adopt envs")
	}
}

// recordLocked encodes e's state record, indented for its place in the
// file; e.mu must be held and e Ready.
func (e *env) recordLocked() []byte {
	r := stateRecord{Name: e.name, Template: e.tmpl.Name, Addr: *e.addr.Load(), Pid: e.proc.Pid(),
		StartedAt: e.startedAt, ReadyAt: e.readyAt}
	if p, ok := e.sb.(interface{ Path() string }); ok {
		r.Namespace = p.Path()
	}
	if rp, ok := e.proc.(Recorded); ok {
		pr := rp.Record()
		r.PidStart, r.Cgroup = pr.PidStart, pr.Cgroup
	}
	b, err := json.MarshalIndent(r, "    ", "  ")
	if err != nil {
		panic(err) // a struct of strings, numbers and times
	}
	return b
}

// writeFileAtomic writes b to path through a temporary file renamed over
// it.
func writeFileAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("lifecycle: state file: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("lifecycle: state file: %w", err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("lifecycle: state file: %w", err)
	}
	return nil
}

// readState reads the state file; a missing file is an empty state.
func readState(path string) (stateFile, error) {
	var st stateFile
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("lifecycle: state file: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return stateFile{}, fmt.Errorf("lifecycle: state file %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return stateFile{}, fmt.Errorf("lifecycle: state file %s: version %d, want %d", path, st.Version, stateVersion)
	}
	return st, nil
}

// process is the record's ProcessRecord.
func (r stateRecord) process() ProcessRecord {
	return ProcessRecord{Pid: r.Pid, PidStart: r.PidStart, Cgroup: r.Cgroup, Namespace: r.Namespace}
}
