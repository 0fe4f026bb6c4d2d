package devserver

import (
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// UIDRange is the uids dynamic users are taken from (First to Last,
// inclusive); each env's gid is its uid's number.
type UIDRange struct{ First, Last uint32 }

// DefaultUIDRange is 16,384 uids well away from regular users (1000 and
// up), systemd's own DynamicUser range (61184-65519) and the usual
// /etc/subuid ranges of rootless containers (100000 and up, 65536 each).
var DefaultUIDRange = UIDRange{First: 2_000_000_000, Last: 2_000_016_383}

// ParseUIDRange parses "first-last".
func ParseUIDRange(s string) (UIDRange, error) {
	a, b, ok := strings.Cut(s, "-")
	first, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 32)
	last, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return UIDRange{}, fmt.Errorf("%q: want first-last, e.g. 2000000000-2000016383", s)
	}
	r := UIDRange{uint32(first), uint32(last)}
	if r.First == 0 || r.Last < r.First || r.Last >= 1<<32-1 {
		return UIDRange{}, fmt.Errorf("%q: want 0 < first <= last < 4294967295", s)
	}
	return r, nil
}

func (r UIDRange) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last) }

// size is how many uids r holds.
func (r UIDRange) size() uint32 { return r.Last - r.First + 1 }

func (r UIDRange) contains(uid uint32) bool { return uid >= r.First && uid <= r.Last }

// ErrNoUIDs means every uid of Config.Users belongs to an env's data dir.
var ErrNoUIDs = errors.New("devserver: every uid of the dynamic user range is taken (widen users.uid_range, or destroy envs)")

// uidAllocator gives each env name a uid of its own. The data dirs are
// the record: an env's uid is the owner of its data dir, which survives
// stops and gateway restarts and goes with destroy. A new env takes the
// first free uid from a hash of its name on.
type uidAllocator struct {
	rng  UIDRange
	root string // Config.DataRoot

	mu     sync.Mutex
	loaded bool              // guarded by mu; owner holds the data dirs' owners
	owner  map[uint32]string // guarded by mu; uid -> env name
	byName map[string]uint32 // guarded by mu; the reverse of owner
}

func newUIDAllocator(rng UIDRange, root string) *uidAllocator {
	if rng == (UIDRange{}) {
		rng = DefaultUIDRange
	}
	return &uidAllocator{rng: rng, root: root}
}

// assign returns the uid of env name, taking a free one if its data dir
// (already made) has none of the range yet.
func (a *uidAllocator) assign(name string) (uint32, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.loaded {
		if err := a.loadLocked(); err != nil {
			return 0, err
		}
	}
	if uid, ok := a.byName[name]; ok {
		// Still its data dir's owner? (It may have been destroyed and made
		// again as root's.)
		if own, err := dirOwner(filepath.Join(a.root, name)); err == nil && own == uid {
			return uid, nil
		}
		delete(a.owner, uid)
		delete(a.byName, name)
	}
	uid, err := a.freeLocked(name)
	if errors.Is(err, ErrNoUIDs) {
		// Destroyed envs' uids are free again: look at the disk afresh.
		if err := a.loadLocked(); err != nil {
			return 0, err
		}
		uid, err = a.freeLocked(name)
	}
	if err != nil {
		return 0, err
	}
	a.owner[uid], a.byName[name] = name, uid
	return uid, nil
}

// freeLocked finds a uid no env holds, starting where name hashes to.
func (a *uidAllocator) freeLocked(name string) (uint32, error) {
	h := fnv.New32a()
	h.Write([]byte(name))
	n := a.rng.size()
	start := h.Sum32() % n
	for i := range n {
		uid := a.rng.First + (start+i)%n
		if _, taken := a.owner[uid]; !taken {
			return uid, nil
		}
	}
	return 0, ErrNoUIDs
}

// loadLocked reads the owners of the data dirs.
func (a *uidAllocator) loadLocked() error {
	a.owner, a.byName = map[uint32]string{}, map[string]uint32{}
	entries, err := os.ReadDir(a.root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("devserver: dynamic users: %w", err)
	}
	for _, e := range entries {
		uid, err := dirOwner(filepath.Join(a.root, e.Name()))
		if err != nil || !a.rng.contains(uid) {
			continue
		}
		if _, dup := a.owner[uid]; dup {
			continue // the second env gets another uid at its next start
		}
		a.owner[uid], a.byName[e.Name()] = e.Name(), uid
	}
	a.loaded = true
	return nil
}

// dirOwner is the uid owning directory p (not following a symlink).
func dirOwner(p string) (uint32, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return 0, err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return 0, fmt.Errorf("%s: not a directory", p)
	}
	return st.Uid, nil
}
