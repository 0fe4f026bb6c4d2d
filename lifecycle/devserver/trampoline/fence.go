package trampoline

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Fencing in the env's init (see lifecycle.Fence). In cluster mode an
// env's data dir is on a filesystem every node mounts, and its owner may
// change while the old owner's dev server still runs: its gateway crashed
// or paused (its processes live on), or was cut off. The gateway of the new owner
// records its token (Fence) before the start; what keeps the two dev
// servers from ever running at once is here, in the init of each env's
// pid namespace (runInit), which lives exactly as long as the env's
// processes and needs no gateway:
//
//   - before it starts the dev server, the init takes Dir/<env>.lock
//     (flock; on NFS a lock the server holds for the client), waiting
//     while another init holds it, and gives up if a newer token than
//     its own is recorded;
//   - it holds the lock until every process of the env is dead: on its
//     way out it kills the whole pid namespace and reaps it first;
//   - while the env runs it reads the token file every fencePoll, and
//     as soon as a newer token is there it kills the env (every process
//     of its pid namespace) and exits.
//
// So a new owner's dev server starts only once the old owner's processes
// are gone, whichever gateway is dead, paused or partitioned, at the cost
// of up to fencePoll (plus a lock attempt's pause) added to such a
// takeover's cold start.

// fencePoll is how often an env's init reads its env's token file, and
// how often a waiting one tries the lock.
const fencePoll = 100 * time.Millisecond

// Fence is a Spec's fence, with Init: the token file and lock of Env in
// Dir, and the token of this start.
type Fence struct {
	Dir   string `json:"dir"`
	Env   string `json:"env"`
	Token int64  `json:"token"`
}

// heldFence is an init's hold on its env's data dir.
type heldFence struct {
	spec   *Fence
	dirFD  int // an O_PATH descriptor of Dir, opened before the mounts change
	lockFD int // holds the flock while the init lives
}

var errNewerOwner = errors.New("a newer owner has claimed the env")

// takeFence opens sp's files and takes the lock, waiting while another
// init holds it; it fails at once if a newer token than sp's is
// recorded. The descriptors are close-on-exec: the dev server gets none.
func takeFence(sp *Fence) (*heldFence, error) {
	dirFD, err := unix.Open(sp.Dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: sp.Dir, Err: err}
	}
	lockFD, err := unix.Openat(dirFD, sp.Env+".lock", unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		unix.Close(dirFD)
		return nil, &os.PathError{Op: "open", Path: sp.Dir + "/" + sp.Env + ".lock", Err: err}
	}
	f := &heldFence{spec: sp, dirFD: dirFD, lockFD: lockFD}
	waiting := false
	for {
		if tok := f.recorded(); tok > sp.Token {
			f.close()
			return nil, fmt.Errorf("%w (token %d, this start's %d)", errNewerOwner, tok, sp.Token)
		}
		err := unix.Flock(lockFD, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.close()
			return nil, fmt.Errorf("lock %s/%s.lock: %w", sp.Dir, sp.Env, err)
		}
		if !waiting {
			// On the env's output: a start that times out here says why.
			fmt.Fprintf(os.Stderr, "envgate: waiting for the previous owner's processes of env %s to stop (lock %s/%s.lock)\n", sp.Env, sp.Dir, sp.Env)
			waiting = true
		}
		time.Sleep(fencePoll)
	}
}

// recorded is the newest token recorded for the env; 0 if unreadable.
func (f *heldFence) recorded() int64 {
	fd, err := unix.Openat(f.dirFD, f.spec.Env+".token", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	var b [32]byte
	n, _ := unix.Read(fd, b[:])
	tok, _ := strconv.ParseInt(strings.TrimSpace(string(b[:max(n, 0)])), 10, 64)
	return tok
}

// watch kills every process of the env's pid namespace but the init as
// soon as a newer token than its own is recorded, and returns; the
// init's wait loop then sees the dev server go. It runs for the init's
// life otherwise.
func (f *heldFence) watch() {
	for {
		time.Sleep(fencePoll)
		if tok := f.recorded(); tok > f.spec.Token {
			fmt.Fprintf(os.Stderr, "envgate: env %s has a newer owner (token %d, this run's %d): stopping it\n", f.spec.Env, tok, f.spec.Token)
			killOthers()
			return
		}
	}
}

// close lets the lock go. Only once every process of the env is dead
// (see killNamespace).
func (f *heldFence) close() {
	unix.Close(f.lockFD)
	unix.Close(f.dirFD)
}

// killOthers SIGKILLs every process of the init's pid namespace but the
// init. Only as pid 1 of its own namespace: kill(-1) anywhere else would
// reach every process root may signal.
func killOthers() {
	if os.Getpid() == 1 {
		unix.Kill(-1, unix.SIGKILL)
	}
}

// killNamespace kills every other process of the init's pid namespace and
// reaps them all, so that none outlives the fence's lock.
func killNamespace() {
	killOthers()
	for {
		_, err := unix.Wait4(-1, nil, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return // ECHILD: none left
		}
	}
}
