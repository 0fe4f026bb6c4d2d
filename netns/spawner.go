package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The spawner: children with a mount namespace of their own (isolated dev
// servers) are forked from long-lived threads whose descriptor tables are
// their own and nearly empty (one thread per start in progress).
//
// A fork copies the forking thread's descriptor table, and the exec that
// follows closes every close-on-exec descriptor of the copy, one by one:
// each close touches the file and its inode. A gateway holds a few
// descriptors per live env (its pidfd, its output pipe, its namespace, an
// idle connection to it), so at 2,000 envs every fork copied and exec
// closed about 8,000 of them: 2-3 ms of CPU per start, a tenth of all
// the CPU a start cost, growing with the number of envs. Each spawner
// thread calls unshare(CLONE_FILES) once, closes its copies of the
// descriptors of that moment, and gets the few a child needs from the
// process's table by pidfd_getfd(2) at each start: its children copy and
// close a handful, however many envs live.
//
// A spawner thread stays locked for good, so the Go runtime runs nothing else
// on it, and it creates no thread from it either (a locked thread asks its
// template thread to, see runtime.newm). It keeps its copies of the
// runtime's own poller descriptors (anonymous epoll and eventfd
// descriptors), which the runtime may use from any thread; and stdin,
// stdout and stderr. It lives in the base mount namespace (mountns.go),
// so the thread each such start made and discarded is gone too, and goes
// back to the process's network namespace after each start (a thread left
// in an env's namespace would keep that namespace alive after Destroy).
//
// Only what it can do the same way as exec.Cmd.Start goes through it:
// a command with an absolute Path, files that are *os.File values or nil,
// no context. Anything else, or a kernel without pidfd_getfd (5.6), takes
// the ordinary path.

// spawnRequest is one start for the spawner. Descriptor numbers are the
// process's (main table's); the spawner fetches its own copies.
type spawnRequest struct {
	path   string
	argv   []string
	env    []string
	dir    string
	files  []int // child's 0, 1, 2, ...; -1: /dev/null
	sys    syscall.SysProcAttr
	netns  int // the namespace to fork in
	before func() error
	after  func() error
	done   chan spawnResult
}

type spawnResult struct {
	pid int
	err error
	// dead: the worker's thread is no longer fit for use (after failed);
	// the worker has left the spawner.
	dead bool
}

// errNoSpawner means the spawner cannot start this command (or none can
// be made): the caller starts it the ordinary way. Nothing was started.
var errNoSpawner = errors.New("netns: no spawner")

// maxSpawnThreads bounds the spawner's threads. It has one per start
// in progress, as many as ever ran at once: a fork waits until its child
// has exec'd, and a child that boots at a low priority (devserver's
// bootNice) on a busy machine may wait long for a CPU; one thread for all
// would make every start wait for the slowest such child before it.
const maxSpawnThreads = 16

// spawner is the running spawner: threads (workers) that each serve reqs
// until their thread is unfit or stop is closed. dead is closed once no
// worker is left.
type spawner struct {
	reqs  chan *spawnRequest
	stop  chan struct{}
	dead  chan struct{}
	probe int // a descriptor of the process's, for a worker's test of pidfd_getfd

	mu      sync.Mutex
	workers map[int]bool // live workers' thread IDs
	starts  int          // workers being started
	ended   bool         // the last worker left: no more
}

// spawnerState is the one spawner of the process.
var spawnerState struct {
	mu     sync.Mutex
	cur    *spawner // nil: none running
	failed error    // the spawner could not be made: do not try again
}

// useSpawner is off only in tests and benchmarks that compare.
var useSpawner = true

// runningSpawner returns the running spawner, starting one with one
// worker if none runs.
func runningSpawner() (*spawner, error) {
	spawnerState.mu.Lock()
	defer spawnerState.mu.Unlock()
	if spawnerState.failed != nil {
		return nil, spawnerState.failed
	}
	if spawnerState.cur != nil {
		return spawnerState.cur, nil
	}
	if _, _, err := baseMountFDs(); err != nil {
		return nil, err
	}
	// The runtime's poller descriptors must exist before a thread's
	// table is split off, or the thread would hold the only ones. The
	// pipe's read end stays open for the workers' test of pidfd_getfd.
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("netns: spawner: %w", err)
	}
	w.Close()
	fd, err := unix.FcntlInt(r.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	r.Close()
	if err != nil {
		return nil, fmt.Errorf("netns: spawner: %w", err)
	}
	sp := &spawner{reqs: make(chan *spawnRequest), stop: make(chan struct{}), dead: make(chan struct{}),
		probe: fd, workers: map[int]bool{}}
	if err := sp.grow(); err != nil {
		unix.Close(fd)
		spawnerState.failed = fmt.Errorf("%w: %w", errNoSpawner, err)
		return nil, spawnerState.failed
	}
	spawnerState.cur = sp
	return sp, nil
}

// grow starts one more worker, unless sp has maxSpawnThreads, and waits
// until it serves.
func (sp *spawner) grow() error {
	sp.mu.Lock()
	if sp.ended || len(sp.workers)+sp.starts >= maxSpawnThreads {
		sp.mu.Unlock()
		return nil
	}
	sp.starts++
	sp.mu.Unlock()
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != os.Getpid() {
			sp.run(ready)
			return
		}
		// The main thread is the process to pidfd_getfd, and must keep
		// the process's table: hold it until the worker's goroutine
		// has locked another.
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			sp.run(ready)
		}()
		<-locked
		runtime.UnlockOSThread()
	}()
	return <-ready
}

// spawnThread is a worker's thread's own descriptors.
type spawnThread struct {
	self    int // pidfd of the process, for pidfd_getfd
	devNull int
	origNet int // the process's network namespace
}

// run is a worker, locked to a thread other than the main one for good
// (the runtime ends the thread with it): it sets the thread up, says so
// on ready, and serves sp.reqs until its thread is unfit or sp stops.
func (sp *spawner) run(ready chan<- error) {
	tid := unix.Gettid()
	var t *spawnThread
	err := errors.New("on the main thread")
	if tid != os.Getpid() {
		t, err = setupSpawnThread(sp.probe)
	}
	sp.mu.Lock()
	sp.starts--
	if err == nil {
		sp.workers[tid] = true
	}
	sp.mu.Unlock()
	ready <- err
	if err != nil {
		return
	}
	defer sp.leave(tid)
	for {
		select {
		case <-sp.stop:
			return
		case r := <-sp.reqs:
			res := t.spawn(r)
			if res.dead {
				sp.leave(tid) // before anyone hears of it
			}
			r.done <- res
			if res.dead {
				return
			}
		}
	}
}

// leave takes worker tid off sp; the last one to leave ends sp.
func (sp *spawner) leave(tid int) {
	sp.mu.Lock()
	if !sp.workers[tid] {
		sp.mu.Unlock()
		return
	}
	delete(sp.workers, tid)
	last := len(sp.workers) == 0 && sp.starts == 0
	sp.ended = last
	sp.mu.Unlock()
	if !last {
		return
	}
	spawnerState.mu.Lock()
	if spawnerState.cur == sp {
		spawnerState.cur = nil
	}
	spawnerState.mu.Unlock()
	unix.Close(sp.probe)
	close(sp.dead)
}

// setupSpawnThread gives the calling (locked) thread a descriptor table
// of its own, nearly empty, and moves it into the base mount namespace;
// it checks that it can fetch descriptor probe from the process's table.
// On error the thread must be discarded.
func setupSpawnThread(probe int) (*spawnThread, error) {
	if err := unix.Unshare(unix.CLONE_FILES); err != nil {
		return nil, fmt.Errorf("unshare files: %w", err)
	}
	// From here on, descriptors are the thread's own.
	origNet, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if _, err := enterBaseMountNS(); err != nil {
		return nil, err
	}
	if err := closeCopies(origNet); err != nil {
		return nil, err
	}
	t := &spawnThread{origNet: origNet, self: -1, devNull: -1}
	if t.self, err = unix.PidfdOpen(os.Getpid(), 0); err != nil {
		return nil, fmt.Errorf("pidfd_open: %w", err)
	}
	if t.devNull, err = unix.Open(os.DevNull, unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	// pidfd_getfd works here (5.6, and no security module in the way)?
	fd, err := unix.PidfdGetfd(t.self, probe, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_getfd: %w", err)
	}
	unix.Close(fd)
	return t, nil
}

// closeCopies closes the thread's copies of the process's descriptors,
// but for stdin, stdout, stderr, keep and anonymous epoll and eventfd
// descriptors (the runtime's poller's; holding more of them is harmless,
// while a copy of a socket or a pipe would keep it open after the process
// closed it).
func closeCopies(keep int) error {
	const dir = "/proc/thread-self/fd"
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	var names []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			unix.Close(fd)
			return err
		}
		if n == 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	unix.Close(fd)
	for _, name := range names {
		n, err := strconv.Atoi(name)
		if err != nil || n <= 2 || n == keep || n == fd {
			continue
		}
		target, err := os.Readlink(filepath.Join(dir, name))
		if err != nil {
			continue // closed meanwhile
		}
		if target == "anon_inode:[eventpoll]" || target == "anon_inode:[eventfd]" {
			continue
		}
		unix.Close(n)
	}
	return nil
}

// spawn forks and execs r on the worker's thread.
func (t *spawnThread) spawn(r *spawnRequest) spawnResult {
	var fetched []int
	defer func() {
		for _, fd := range fetched {
			unix.Close(fd)
		}
	}()
	fetch := func(fd int) (int, error) {
		if fd < 0 {
			return t.devNull, nil
		}
		own, err := unix.PidfdGetfd(t.self, fd, 0)
		if err != nil {
			return -1, fmt.Errorf("netns: spawner: descriptor %d: %w", fd, err)
		}
		fetched = append(fetched, own)
		return own, nil
	}
	// A program named by one of the process's descriptors
	// (/proc/self/fd/N) is the same descriptor number here.
	if n, ok := fdPath(r.path); ok {
		if _, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0); err == nil {
			return spawnResult{err: errNoSpawner} // the number is taken here
		}
		own, err := fetch(n)
		if err != nil {
			return spawnResult{err: err}
		}
		if err := unix.Dup3(own, n, unix.O_CLOEXEC); err != nil {
			return spawnResult{err: fmt.Errorf("netns: spawner: %w", err)}
		}
		fetched = append(fetched, n)
	}
	files := make([]uintptr, len(r.files))
	for i, fd := range r.files {
		own, err := fetch(fd)
		if err != nil {
			return spawnResult{err: err}
		}
		files[i] = uintptr(own)
	}
	sys := r.sys
	if sys.UseCgroupFD {
		own, err := fetch(sys.CgroupFD)
		if err != nil {
			return spawnResult{err: err}
		}
		sys.CgroupFD = own
	}
	ns, err := fetch(r.netns)
	if err != nil {
		return spawnResult{err: err}
	}
	if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
		return spawnResult{err: fmt.Errorf("netns: setns: %w", err)}
	}
	var pid int
	if r.before != nil {
		err = r.before()
	}
	if err == nil {
		pid, err = syscall.ForkExec(r.path, r.argv, &syscall.ProcAttr{Dir: r.dir, Env: r.env, Files: files, Sys: &sys})
		if err != nil {
			err = &os.PathError{Op: "fork/exec", Path: r.path, Err: err}
		}
	}
	res := spawnResult{pid: pid, err: err}
	if r.after != nil {
		if aerr := r.after(); aerr != nil {
			res.err, res.dead = errors.Join(err, aerr), true
		}
	}
	if err := unix.Setns(t.origNet, unix.CLONE_NEWNET); err != nil {
		res.err, res.dead = errors.Join(res.err, fmt.Errorf("netns: restore namespace: %w", err)), true
	}
	return res
}

// fdPath returns N if path is /proc/self/fd/N.
func fdPath(path string) (int, bool) {
	s, ok := strings.CutPrefix(path, "/proc/self/fd/")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0
}

// spawnIn starts cmd in the network namespace ns through the spawner, with
// before and after run on its thread (see Sandbox.StartWith). It returns
// errNoSpawner, having started nothing, if the spawner cannot do it the
// way cmd.Start would. On success cmd.Process is set, so cmd.Wait works,
// and so is *cmd.SysProcAttr.PidFD if asked for.
func spawnIn(ns int, cmd *exec.Cmd, before, after func() error) error {
	if !useSpawner || cmd.Err != nil || cmd.Process != nil || !filepath.IsAbs(cmd.Path) || cmd.Cancel != nil || cmd.WaitDelay != 0 {
		return errNoSpawner
	}
	files := []int{-1, -1, -1}
	for i, s := range []any{cmd.Stdin, cmd.Stdout, cmd.Stderr} {
		switch f := s.(type) {
		case nil:
		case *os.File:
			if f == nil {
				return errNoSpawner
			}
			// Fd, as os.StartProcess calls it: it also puts the file in
			// blocking mode, on this side, where its number is its own.
			files[i] = int(f.Fd())
		default:
			return errNoSpawner // copying goroutines: exec.Cmd's job
		}
	}
	for _, f := range cmd.ExtraFiles {
		if f == nil {
			files = append(files, -1)
			continue
		}
		files = append(files, int(f.Fd()))
	}
	sp, err := runningSpawner()
	if err != nil {
		return errNoSpawner
	}
	r := &spawnRequest{path: cmd.Path, argv: cmd.Args, env: cmd.Environ(), dir: cmd.Dir, files: files, netns: ns,
		before: before, after: after, done: make(chan spawnResult, 1)}
	if len(r.argv) == 0 {
		r.argv = []string{cmd.Path}
	}
	if cmd.SysProcAttr != nil {
		r.sys = *cmd.SysProcAttr
	}
	r.sys.PidFD = nil // opened below, on this side
	select {
	case sp.reqs <- r:
	default:
		// Every worker is busy: one more (if it may), then the first
		// to be free.
		sp.grow()
		select {
		case sp.reqs <- r:
		case <-sp.dead:
			return errNoSpawner // it died after another start
		}
	}
	res := <-r.done
	runtime.KeepAlive(cmd)
	if res.pid > 0 {
		// Also when after failed: as StartWith says, the caller then
		// checks cmd.Process.
		setProcess(cmd, res.pid)
	}
	return res.err
}

// setProcess records pid, our unreaped child, in cmd as cmd.Start would:
// cmd.Process and the pidfd SysProcAttr.PidFD asks for. A pid stays its
// own until it is waited for, so opening by pid is no race.
func setProcess(cmd *exec.Cmd, pid int) {
	if sys := cmd.SysProcAttr; sys != nil && sys.PidFD != nil {
		*sys.PidFD = -1
		if fd, err := unix.PidfdOpen(pid, 0); err == nil {
			*sys.PidFD = fd
		}
	}
	cmd.Process, _ = os.FindProcess(pid) // never fails on Unix
}
