package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// onThreadIn runs fn on a fresh goroutine locked to its OS thread, with that
// thread switched into target. It switches back afterwards; if that fails,
// the goroutine exits still locked, and the runtime discards the thread
// rather than reuse it in the wrong namespace. fn must not start goroutines
// that expect to run in target: they run on other threads.
func onThreadIn(target netns.NsHandle, fn func() error) error {
	return onLockedThread(func() error {
		if err := netns.Set(target); err != nil {
			return fmt.Errorf("netns: setns: %w", err)
		}
		return fn()
	})
}

// onLockedThread runs fn on a locked thread and restores the thread's
// network namespace afterwards (fn may switch it, as unshare does).
func onLockedThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: get current namespace: %w", err)
			return
		}
		defer orig.Close()
		ferr := fn()
		var tainted threadTainted
		if errors.As(ferr, &tainted) {
			// fn left the thread in a state it could not undo: stay
			// locked, so the thread dies with this goroutine. Back in the
			// original namespace all the same: if this is the main
			// thread, the runtime keeps it (wedged), and /proc/self shows
			// the main thread's namespaces.
			netns.Set(orig)
			errc <- tainted.err
			return
		}
		if err := netns.Set(orig); err != nil {
			// Stay locked: the thread dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("netns: restore namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// threadTainted is an error after which the thread it happened on must
// not be reused: onLockedThread then lets the runtime discard the thread
// and returns err, which may be nil (the work succeeded, but left the
// thread changed).
type threadTainted struct{ err error }

func (e threadTainted) Error() string { return e.err.Error() }
func (e threadTainted) Unwrap() error { return e.err }

// createNamed makes a new network namespace bind-mounted at RunDir/name and
// returns a handle to it. The calling thread is never switched: the unshare
// happens on a locked helper thread that switches back. inside, if not
// nil, runs on that thread in the new namespace, before anything else
// does there.
func createNamed(name string, inside func() error) (netns.NsHandle, error) {
	if err := ensureRunDir(); err != nil {
		return netns.None(), err
	}
	path := filepath.Join(RunDir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return netns.None(), fmt.Errorf("netns: create %s: %w", name, err)
	}
	f.Close()
	err = onStartThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		if inside != nil {
			// Before the mount: a failure leaves nothing to undo.
			if err := inside(); err != nil {
				return err
			}
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount: %w", err)
		}
		return nil
	})
	if err != nil {
		os.Remove(path)
		return netns.None(), fmt.Errorf("netns: create %s: %w", name, err)
	}
	h, err := netns.GetFromPath(path)
	if err != nil {
		deleteNamed(name)
		return netns.None(), fmt.Errorf("netns: open %s: %w", name, err)
	}
	return h, nil
}

// deleteNamed unmounts and removes RunDir/name. Either step finding its
// object already gone counts as success; a failed unmount does not stop the
// removal attempt.
func deleteNamed(name string) error {
	path := filepath.Join(RunDir, name)
	var errs []error
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("unmount: %w", err))
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("netns: delete %s: %w", name, err)
	}
	return nil
}

// StartNice is the nice value of the threads that make a sandbox (the
// namespace's creation, its veth, addresses and routes: kernel work of a
// few milliseconds per start). In a start storm on a small machine that
// work would otherwise take the CPUs from the gateway's request path on
// equal terms, and warm envs' requests would wait behind other envs'
// starts; at a lower priority it yields to them, and on a quiet machine
// nothing competes and nothing slows.
const StartNice = 10

// processNice is the gateway's own nice value, which every thread but
// those making sandboxes keeps.
var processNice = func() int {
	// The raw getpriority returns 20 - nice.
	if p, err := unix.Getpriority(unix.PRIO_PROCESS, 0); err == nil {
		return 20 - p
	}
	return 0
}()

// onStartThread is onLockedThread with fn run at StartNice (unless the
// process runs at that or lower a priority already). The thread is set
// back to the process's nice value before it returns to the runtime; one
// that cannot be is discarded rather than serve requests at a start's
// priority.
func onStartThread(fn func() error) error {
	if processNice >= StartNice {
		return onLockedThread(fn)
	}
	return onLockedThread(func() error {
		if err := setThreadNice(StartNice); err != nil {
			return err
		}
		ferr := fn()
		if err := setThreadNice(processNice); err != nil {
			return threadTainted{errors.Join(ferr, err)}
		}
		return ferr
	})
}

// setThreadNice sets the calling (locked) thread's nice value.
func setThreadNice(nice int) error {
	if err := unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), nice); err != nil {
		return fmt.Errorf("netns: nice %d: %w", nice, err)
	}
	return nil
}
