package access

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

// statEvery bounds how often an htpasswd file is looked at for changes:
// a busy gateway must not stat it on every request.
const statEvery = time.Second

// maxVerified bounds the cache of checked passwords.
const maxVerified = 1024

// htpasswd is a file of user:bcrypt-hash lines, read again when its
// size, modification time or inode change.
type htpasswd struct {
	path string
	log  zerolog.Logger

	users   atomic.Pointer[userSet]
	checked atomic.Int64 // unix nanoseconds of the last stat
	// bcrypt costs tens of milliseconds a try by design: sem bounds the
	// CPU that wrong passwords can take.
	sem chan struct{}

	mu   sync.Mutex // guards reloads
	file fileID     // guarded by mu: what users was read from
}

// userSet is one reading of the file. verified holds the SHA-256 of
// "user\x00password" for passwords that matched, so that a browser,
// which sends them with every request, pays for bcrypt once.
type userSet struct {
	hashes   map[string][]byte
	cost     int           // the highest bcrypt cost in the file
	dummy    func() []byte // a hash of that cost, for unknown users
	mu       sync.Mutex
	verified map[[32]byte]bool // guarded by mu
}

type fileID struct {
	size  int64
	mtime time.Time
	ino   uint64
}

func loadHtpasswd(path string, log zerolog.Logger) (*htpasswd, error) {
	h := &htpasswd{path: path, log: log, sem: make(chan struct{}, runtime.GOMAXPROCS(0))}
	id, set, err := readHtpasswd(path)
	if err != nil {
		return nil, err
	}
	h.file = id
	h.users.Store(set)
	h.checked.Store(time.Now().UnixNano())
	return h, nil
}

func statID(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	id := fileID{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino = st.Ino
	}
	return id, nil
}

// readHtpasswd parses path. Only bcrypt hashes ($2a$, $2b$, $2y$, as
// htpasswd -B writes them) are accepted: the others htpasswd knows (MD5,
// SHA-1, crypt) are too weak to keep.
func readHtpasswd(path string) (fileID, *userSet, error) {
	id, err := statID(path)
	if err != nil {
		return fileID{}, nil, fmt.Errorf("htpasswd: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fileID{}, nil, fmt.Errorf("htpasswd: %w", err)
	}
	set := &userSet{hashes: map[string][]byte{}, verified: map[[32]byte]bool{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return fileID{}, nil, fmt.Errorf("htpasswd: %s:%d: want user:hash", path, n)
		}
		cost, err := bcrypt.Cost([]byte(hash))
		if err != nil {
			return fileID{}, nil, fmt.Errorf("htpasswd: %s:%d: user %q: not a bcrypt hash (make one with htpasswd -B)", path, n, user)
		}
		set.hashes[user] = []byte(hash)
		set.cost = max(set.cost, cost)
	}
	// Unknown users cost as much time as known ones, so timing does not
	// tell which users exist; made on first use, as bcrypt is slow by
	// design.
	set.dummy = sync.OnceValue(func() []byte {
		b, _ := bcrypt.GenerateFromPassword([]byte("envgate-no-such-user"), max(set.cost, bcrypt.MinCost))
		return b
	})
	return id, set, sc.Err()
}

// current returns the users, reading the file again first if it changed
// and was last looked at more than statEvery ago. A file that became
// unreadable or malformed keeps the users last read, with a warning.
func (h *htpasswd) current() *userSet {
	now := time.Now().UnixNano()
	last := h.checked.Load()
	if now-last < int64(statEvery) || !h.checked.CompareAndSwap(last, now) {
		return h.users.Load()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	id, err := statID(h.path)
	if err == nil && id == h.file {
		return h.users.Load()
	}
	id, set, err := readHtpasswd(h.path)
	if err != nil {
		h.log.Warn().Err(err).Str("file", h.path).Msg("htpasswd unreadable; keeping the users read before")
		return h.users.Load()
	}
	h.file = id
	h.users.Store(set)
	h.log.Info().Str("file", h.path).Int("users", len(set.hashes)).Msg("htpasswd reloaded")
	return set
}

// verify reports whether pass is user's password.
func (h *htpasswd) verify(user, pass string) bool {
	set := h.current()
	hash, ok := set.hashes[user]
	if !ok {
		hash = set.dummy()
	}
	key := sha256.Sum256([]byte(user + "\x00" + pass))
	set.mu.Lock()
	hit := set.verified[key]
	set.mu.Unlock()
	if hit && ok {
		return true
	}
	h.sem <- struct{}{}
	err := bcrypt.CompareHashAndPassword(hash, []byte(pass))
	<-h.sem
	if err != nil || !ok {
		return false
	}
	set.mu.Lock()
	if len(set.verified) >= maxVerified {
		clear(set.verified)
	}
	set.verified[key] = true
	set.mu.Unlock()
	return true
}
