package netns

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// RunDir and other users of it.
//
// iproute2 (`ip netns add`), and CNI and Docker, which copy it, make RunDir
// a shared bind mount of itself before their first namespace mount, so that
// namespace mounts propagate between mount namespaces. If RunDir is not a
// mount point yet, that bind (recursive, MS_BIND|MS_REC) lays a new mount
// over the directory holding copies of the namespace mounts already there;
// the originals stay underneath, out of reach: unmounting a name removes
// only the copy, the file cannot be removed (EBUSY, a mount point in the
// hidden layer) and the namespace lives on. So envgate does the same bind
// first: later tools then find a mount point, make it shared again, and
// mount into the same layer as envgate.

// runDirState makes RunDir a mount point once per process.
var runDirState struct {
	mu   sync.Mutex
	done bool // RunDir was a mount point, or was made one, by this process
}

// ensureRunDir creates RunDir and makes it a shared mount point, as
// iproute2's netns_add does: make it shared (recursively), and if that
// fails because it is not a mount point, bind it onto itself and try again.
// It does this once per process; a failure is retried on the next call.
// Other envgate processes are kept out by a lock on the directory while
// it checks and binds (iproute2 takes none: a race with it stays possible,
// as between two `ip netns add`).
func ensureRunDir() error {
	runDirState.mu.Lock()
	defer runDirState.mu.Unlock()
	if runDirState.done {
		return nil
	}
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	dir, err := os.Open(RunDir)
	if err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	defer dir.Close()
	// The lock is on the directory's inode, which the bind does not change.
	if err := unix.Flock(int(dir.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("netns: lock %s: %w", RunDir, err)
	}
	defer unix.Flock(int(dir.Fd()), unix.LOCK_UN)
	bound := false
	for {
		err := unix.Mount("", RunDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EINVAL) || bound {
			return fmt.Errorf("netns: make %s a shared mount: %w", RunDir, err)
		}
		// Recursive, like iproute2: namespace mounts that are already
		// there (another program's) stay reachable in the new layer.
		if err := unix.Mount(RunDir, RunDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("netns: bind %s onto itself: %w", RunDir, err)
		}
		bound = true
	}
	runDirState.done = true
	return nil
}

// forgetRunDir makes the next ensureRunDir check RunDir again (GC calls it
// after removing layers of RunDir).
func forgetRunDir() {
	runDirState.mu.Lock()
	runDirState.done = false
	runDirState.mu.Unlock()
}
