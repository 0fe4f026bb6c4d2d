package devserver

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Waiting for a dev server without a thread. wait4, waitid and
// os.Process.Wait are blocking system calls: a goroutine in one holds an
// OS thread for as long as the process lives, so a thousand envs cost a
// thousand threads (and their stacks). A pidfd instead polls readable
// once its process has exited (for children and non-children alike), so
// the runtime's network poller can watch it like a socket: the waiting
// goroutine parks and holds no thread. Once it is readable, the exit
// status of a child is collected by wait4 (process.wait, released), or by cmd.Wait
// where os/exec keeps the child (process.wait); either returns at once.

// pidfdsWork reports whether the kernel has pidfd_open (5.3), and so
// clone's CLONE_PIDFD (5.2), which os/exec then uses too.
var pidfdsWork = sync.OnceValue(func() bool {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
})

// ownPidfd makes pidfd, the one clone gave for cmd's child
// (SysProcAttr.PidFD), pollable and the only descriptor the gateway holds
// for the child: os/exec's own copy goes with cmd.Process.Release, so
// the child's exit is collected by wait4 in process.wait, not cmd.Wait. Every
// descriptor the gateway holds is copied and closed at each later fork
// and exec: at 2,000 live envs one descriptor per env costs about 0.7 ms
// of CPU per start. On error pidfd is closed and cmd is untouched.
func ownPidfd(cmd *exec.Cmd, pidfd int) (*os.File, error) {
	if err := unix.SetNonblock(pidfd, true); err != nil {
		unix.Close(pidfd)
		return nil, fmt.Errorf("pidfd: %w", err)
	}
	f := os.NewFile(uintptr(pidfd), "pidfd-"+strconv.Itoa(cmd.Process.Pid))
	cmd.Process.Release()
	return f, nil
}

// openPidfd returns a pollable pidfd for pid. For our own unreaped child
// there is no pid-reuse race: its pid stays its own until we wait for it.
func openPidfd(pid int) (*os.File, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	// Non-blocking, so os.NewFile registers it with the poller.
	return os.NewFile(uintptr(fd), "pidfd-"+strconv.Itoa(pid)), nil
}

// pollablePidfd returns a pidfd like f that the runtime's poller can
// watch, and closes f. A pidfd handed over by another process (or opened
// without PIDFD_NONBLOCK) is blocking, and an *os.File made from a
// blocking descriptor is not registered with the poller; O_NONBLOCK on a
// pidfd only changes waitid on it, which is not used here.
func pollablePidfd(f *os.File) (*os.File, error) {
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup pidfd: %w", derr)
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return nil, fmt.Errorf("pidfd: %w", err)
	}
	return os.NewFile(uintptr(dup), f.Name()), nil
}

// awaitExit parks until the process behind pidfd f has exited, holding no
// OS thread meanwhile. It returns early only if f is closed or cannot be
// polled (an error).
func awaitExit(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		// Called once at first, then each time the poller says the pidfd
		// is readable: check, since a wakeup alone proves nothing.
		for {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(pfd, 0)
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if err != nil {
				perr = err
				return true
			}
			return n > 0
		}
	})
	if err == nil {
		err = perr
	}
	if err != nil {
		return fmt.Errorf("wait for exit: %w", err)
	}
	return nil
}
