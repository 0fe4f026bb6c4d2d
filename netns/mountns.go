package netns

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// The base mount namespace of processes started with a mount namespace of
// their own.
//
// clone(CLONE_NEWNS) copies every mount of the caller's mount namespace,
// and the gateway's holds one namespace mount per live sandbox in RunDir:
// with 2,000 sandboxes a new mount namespace costs about 4 ms more to make
// and about 8 ms more to strip of those mounts (which it must drop, or it
// would keep every other env's network namespace alive), all under the
// kernel's global mount lock. So such processes are forked from a thread
// that has joined a base mount namespace made once (the spawner's thread,
// spawner.go, or else a thread per start): a slave copy of the
// caller's (mounts the host makes later still propagate into it) in which
// RunDir is covered by an empty read-only tmpfs, so it holds no namespace
// mount however many sandboxes live. Its copies cost the same at 0 and at
// 2,000 sandboxes.

// useBaseMountNS is off only in a benchmark that compares.
var useBaseMountNS = true

// baseMountNS is the base mount namespace, made on first use, and the
// process's own, to come back to.
var baseMountNS struct {
	once sync.Once
	fd   int // open ns/mnt of the base namespace
	orig int // open ns/mnt of the process's mount namespace
	err  error
}

// baseMountFDs returns fds of the base and of the process's own mount
// namespace.
func baseMountFDs() (base, orig int, err error) {
	baseMountNS.once.Do(func() {
		baseMountNS.fd, baseMountNS.orig, baseMountNS.err = makeBaseMountNS()
	})
	return baseMountNS.fd, baseMountNS.orig, baseMountNS.err
}

// makeBaseMountNS makes the base mount namespace on a thread of its own,
// which then dies with its goroutine: the fd keeps the namespace alive.
// The thread goes back to the process's mount namespace first: if it is
// the main thread, the runtime keeps it (wedged) instead of ending it, and
// the main thread's namespaces are what /proc/self shows.
func makeBaseMountNS() (base, orig int, err error) {
	if err := ensureRunDir(); err != nil {
		return -1, -1, err
	}
	type result struct {
		base, orig int
		err        error
	}
	res := make(chan result, 1)
	go func() {
		// Never unlocked: the thread's fs is no longer the process's, so
		// the runtime must discard it.
		runtime.LockOSThread()
		r := result{-1, -1, nil}
		r.orig, r.err = openThreadMountNS()
		if r.err == nil {
			r.base, r.err = func() (int, error) {
				wd, err := unix.Getwd()
				if err != nil {
					return -1, err
				}
				// A thread that shares its fs (cwd, root) with others may
				// not change its mount namespace.
				if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
					return -1, fmt.Errorf("unshare: %w", err)
				}
				defer leaveMountNS(r.orig, wd)
				// Slave: nothing mounted here reaches the host; what the
				// host mounts later still reaches here.
				if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
					return -1, fmt.Errorf("make / a slave: %w", err)
				}
				// Drop the copy of RunDir with its namespace mounts (it
				// would keep those namespaces alive), then cover the
				// directory, whose files name the host's namespaces, with
				// an empty one.
				if err := unix.Unmount(RunDir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
					return -1, fmt.Errorf("unmount %s: %w", RunDir, err)
				}
				if err := unix.Mount("tmpfs", RunDir, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=4k,mode=755"); err != nil {
					return -1, fmt.Errorf("cover %s: %w", RunDir, err)
				}
				return openThreadMountNS()
			}()
		}
		res <- r
	}()
	r := <-res
	if r.err != nil {
		if r.orig >= 0 {
			unix.Close(r.orig)
		}
		return -1, -1, fmt.Errorf("netns: base mount namespace: %w", r.err)
	}
	return r.base, r.orig, nil
}

// openThreadMountNS opens the calling thread's mount namespace.
func openThreadMountNS() (int, error) {
	return unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/mnt", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
}

// leaveMountNS moves the calling thread back to mount namespace orig and
// working directory wd, as far as it can.
func leaveMountNS(orig int, wd string) {
	unix.Setns(orig, unix.CLONE_NEWNS)
	unix.Chdir(wd)
}

// enterBaseMountNS moves the calling (locked) thread into the base mount
// namespace; leave moves it back. The thread must not be reused
// afterwards: its fs is its own.
func enterBaseMountNS() (leave func(), err error) {
	base, orig, err := baseMountFDs()
	if err != nil {
		return nil, err
	}
	// Joining a mount namespace moves the thread to its root: come back
	// to the working directory a child without cmd.Dir inherits.
	wd, err := unix.Getwd()
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return nil, fmt.Errorf("netns: unshare fs: %w", err)
	}
	if err := unix.Setns(base, unix.CLONE_NEWNS); err != nil {
		return nil, fmt.Errorf("netns: enter base mount namespace: %w", err)
	}
	if err := unix.Chdir(wd); err != nil {
		leaveMountNS(orig, wd)
		return nil, fmt.Errorf("netns: %w", err)
	}
	return func() { leaveMountNS(orig, wd) }, nil
}
