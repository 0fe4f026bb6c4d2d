package trampoline

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// An isolated env's dev server runs in a pid namespace and a mount
// namespace of its own (spawn asks clone for both). The trampoline is
// pid 1 there, as root: it makes the mounts private, mounts a /proc of the
// new pid namespace (so the env sees its own processes only), a private
// tmpfs on /tmp and /dev/shm, binds what the env must still see, then
// starts the dev server as the env's user and stays as its init, as
// docker --init and tini do:
//
//   - pid 1 of a namespace gets no signal it has no handler for, so a dev
//     server there would ignore the gateway's SIGTERM. The dev server is
//     pid 2 instead and stays in the trampoline's process group, which the
//     gateway signals as it signals any dev server's: both get the signal.
//     The trampoline only passes a signal on to a dev server that left
//     the group (setsid).
//   - Orphans of the namespace become the trampoline's children: it reaps
//     them, so no zombies pile up.
//   - When the dev server exits, the trampoline exits with its status (a
//     signal's death as 128+signal); the kernel then kills whatever else
//     is left in the namespace. SIGKILL to the group does the same at once.
//
// The pid the gateway records (state file, recovery) is the trampoline's,
// in the host's pid namespace; it leads the process group, holds the
// output pipe at outputFD and is in the env's network namespace and
// cgroup, as a dev server started without isolation would be.

// forwardedSignals are passed on to a dev server that left the group.
var forwardedSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2}

// runInit is the trampoline's work in an isolated env; it returns the
// exit code.
func runInit(sp *Spec) int {
	var fence *heldFence
	if sp.Fence != nil {
		// Before the mounts change: the fence dir may lie under /tmp.
		var err error
		if fence, err = takeFence(sp.Fence); err != nil {
			fail(126, "fence: %v", err)
		}
		// Every way out of the init kills and reaps the namespace first,
		// then lets the lock go (at exit).
		defer killNamespace()
	}
	if err := isolateMounts(sp); err != nil {
		fail(126, "isolate: %v", err)
	}
	// Caught from before the dev server exists: a SIGTERM must not kill
	// the init (the runtime's default) before it can pass it on.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)
	cmd := exec.Command(sp.Path)
	cmd.Args = os.Args
	cmd.Env = os.Environ()
	// Only 0, 1 and 2: the output pipe's read end at outputFD stays with
	// the trampoline, which is what a next gateway reopens.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if c := sp.Cred; c != nil && c.UID != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: c.UID, Gid: c.GID, Groups: []uint32{}}
	}
	// Only 0, 1 and 2 reach the dev server: os/exec closes nothing else,
	// and the trampoline's inherited descriptors are not close-on-exec
	// (outputFD, and any the gateway itself inherited). They stay open
	// here. Before kernel 5.11 (no CLOSE_RANGE_CLOEXEC) they are marked
	// one by one.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
			for _, e := range fds {
				if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
					unix.CloseOnExec(fd)
				}
			}
		}
	}
	if sp.NNP {
		// On this (locked) thread, which forks the dev server.
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			fail(126, "no_new_privs: %v", err)
		}
	}
	if err := cmd.Start(); err != nil {
		fail(127, "start %s: %v", sp.Path, err)
	}
	child := cmd.Process.Pid
	go forwardSignals(sigs, child)
	if fence != nil {
		go fence.watch()
	}
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			if fence != nil {
				killNamespace()
			}
			fail(1, "wait: %v", err)
		}
		if pid != child {
			continue // an orphan, reaped
		}
		if ws.Signaled() {
			if s := ws.Signal(); s != syscall.SIGTERM && s != syscall.SIGINT && s != syscall.SIGKILL {
				// The gateway sees the init's exit status only: say why.
				if fence != nil {
					killNamespace()
				}
				fail(128+int(s), "dev server killed by signal %v", s)
			}
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}

// forwardSignals passes the signals the init gets on to the dev server's
// process group, if the dev server left the init's own: otherwise the
// group signal reached it already.
func forwardSignals(sigs <-chan os.Signal, child int) {
	own := unix.Getpgrp()
	for s := range sigs {
		if pg, err := unix.Getpgid(child); err == nil && pg != own {
			unix.Kill(-pg, s.(syscall.Signal))
		}
	}
}

// isolateMounts sets up the new mount namespace.
func isolateMounts(sp *Spec) error {
	// Nothing mounted here reaches the host, and nothing the host mounts
	// from now on reaches here.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return &os.PathError{Op: "make private", Path: "/", Err: err}
	}
	for _, h := range sp.Hide {
		// The copy of the netns run dir holds a reference to every other
		// env's network namespace, which would keep them alive after the
		// host unmounts them: drop it.
		if err := unix.Unmount(h, unix.MNT_DETACH); errors.Is(err, unix.EINVAL) {
			// Not a mount point itself: its entries are.
			entries, _ := os.ReadDir(h)
			for _, e := range entries {
				unix.Unmount(filepath.Join(h, e.Name()), unix.MNT_DETACH)
			}
		}
	}
	// Paths under /tmp the env needs: held open across the tmpfs mount,
	// bound back in at the same place.
	type kept struct {
		path string
		fd   int
		dir  bool
	}
	var keep []kept
	for _, p := range sp.Keep {
		fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: p, Err: err}
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return &os.PathError{Op: "stat", Path: p, Err: err}
		}
		keep = append(keep, kept{p, fd, st.Mode&unix.S_IFMT == unix.S_IFDIR})
	}
	// Bind sources too are opened before /tmp goes: one may lie under
	// it (a state dir in /tmp, as in tests).
	binds := make([]int, len(sp.Binds))
	for i, b := range sp.Binds {
		if b.Source == "" {
			binds[i] = -1 // made below, on the new /tmp
			continue
		}
		fd, err := unix.Open(b.Source, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: b.Source, Err: err}
		}
		binds[i] = fd
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return &os.PathError{Op: "mount proc", Path: "/proc", Err: err}
	}
	size := "mode=1777"
	if sp.TmpSize > 0 {
		size += ",size=" + strconv.FormatInt(sp.TmpSize, 10)
	}
	for _, d := range []string{"/tmp", "/dev/shm"} {
		if err := unix.Mount("tmpfs", d, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, size); err != nil && d == "/tmp" {
			return &os.PathError{Op: "mount tmpfs", Path: d, Err: err}
		}
	}
	for _, k := range keep {
		if err := mountPoint(k.path, k.dir); err != nil {
			return err
		}
		src := "/proc/self/fd/" + strconv.Itoa(k.fd)
		if err := unix.Mount(src, k.path, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return &os.PathError{Op: "bind", Path: k.path, Err: err}
		}
		unix.Close(k.fd)
	}
	for i, b := range sp.Binds {
		source := b.Source
		if source == "" {
			fd, path, err := ownFile(i, b.Content)
			if err != nil {
				return err
			}
			binds[i], source = fd, path
		}
		var st unix.Stat_t
		if err := unix.Fstat(binds[i], &st); err != nil {
			return &os.PathError{Op: "stat", Path: source, Err: err}
		}
		if err := mountPoint(b.Target, st.Mode&unix.S_IFMT == unix.S_IFDIR); err != nil {
			return err
		}
		src := "/proc/self/fd/" + strconv.Itoa(binds[i])
		if err := unix.Mount(src, b.Target, "", unix.MS_BIND, ""); err != nil {
			return &os.PathError{Op: "bind " + source, Path: b.Target, Err: err}
		}
		if err := unix.Mount("", b.Target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
			return &os.PathError{Op: "make read-only", Path: b.Target, Err: err}
		}
		unix.Close(binds[i])
		if b.Source == "" {
			// The mount keeps the file; its name on /tmp goes.
			if err := unix.Unlink(source); err != nil {
				return &os.PathError{Op: "remove", Path: source, Err: err}
			}
		}
	}
	return nil
}

// ownFile makes the file of the i-th bind with content on the env's new
// /tmp (root's, 0644) and returns it open, with its path.
func ownFile(i int, content string) (int, string, error) {
	path := "/tmp/.envgate-bind-" + strconv.Itoa(i)
	fd, err := unix.Open(path, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return -1, "", &os.PathError{Op: "create", Path: path, Err: err}
	}
	// Whatever the umask.
	err = unix.Fchmod(fd, 0o644)
	if err == nil {
		var n int
		n, err = unix.Write(fd, []byte(content))
		if err == nil && n < len(content) {
			err = unix.EIO
		}
	}
	if err != nil {
		unix.Close(fd)
		return -1, "", &os.PathError{Op: "write", Path: path, Err: err}
	}
	return fd, path, nil
}

// mountPoint makes sure path exists as a directory or a file to mount on.
func mountPoint(path string, dir bool) error {
	if dir {
		return os.MkdirAll(path, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}
