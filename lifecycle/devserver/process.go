package devserver

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver/trampoline"
	"github.com/envgate/envgate/netns"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// outputFD is the descriptor number at which every dev server holds the
// read end of its own output pipe (see spawn): the pipe then always has a
// reader, so a gateway that dies does not kill its dev servers with
// SIGPIPE, and the next gateway reopens the pipe from /proc (Pin).
const outputFD = 3

// process is one running dev server: a lifecycle.Process.
type process struct {
	pid    int
	cmd    *exec.Cmd           // nil for an adopted process
	out    *os.File            // read end of the output pipe; closed by Release
	pumped chan struct{}       // closed when the output pump has finished
	exited chan struct{}       // closed once the process has exited
	lines  chan struct{}       // gets a value (if there is room) per line of output
	status *syscall.WaitStatus // how it exited; nil if unknown (read after exited is closed)
	err    error               // from the wait; read after exited is closed
	cg     envCgroup           // the env's cgroup; nil without cgroups
	sb     lifecycle.Sandbox   // where it runs; nil for an adopted process
	log    zerolog.Logger
}

// spawn starts x inside sb with its stdout and stderr in one pipe (so the
// order of lines is kept) pumped into buf, disk and the log. The dev
// server leads a process group of its own so stop can signal all of it.
func (l *Launcher) spawn(sb lifecycle.Sandbox, x expanded, baseEnv []string, cg envCgroup, buf *lifecycle.Output, disk *diskLog, log zerolog.Logger) (*process, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("output pipe: %w", err)
	}
	cmd := exec.Command(x.argv[0], x.argv[1:]...)
	cmd.Dir = x.dir
	cmd.Env = baseEnv
	for k, v := range x.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	// The child keeps a read end of its own output pipe at outputFD, so
	// the pipe outlives a gateway that dies: no SIGPIPE for the dev server,
	// and the next gateway reopens it (Pin). It is a separate open of
	// the pipe, so that exec's switching it to blocking mode leaves r,
	// which the pump reads through the poller, alone.
	keep, err := reopenOwn(r)
	if err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("output pipe: %w", err)
	}
	cmd.Stdin = nil // /dev/null
	cmd.Stdout = w  // *os.File: no copying goroutine, no hang on
	cmd.Stderr = w  // grandchildren that keep the pipe open
	cmd.ExtraFiles = []*os.File{keep}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The child's pidfd, from its clone: the one descriptor the gateway
	// keeps for it (see ownPidfd).
	pidfd := -1
	if pidfdsWork() {
		cmd.SysProcAttr.PidFD = &pidfd
	}
	sp := trampoline.Spec{Rlimits: x.rlimits}
	if iso := x.iso; iso != nil {
		// The trampoline, as root, sets the namespaces up and drops
		// privileges for the dev server it starts (trampoline/init.go).
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWPID | syscall.CLONE_NEWNS
		sp.Init, sp.TmpSize, sp.Keep, sp.Hide, sp.Binds = true, iso.tmpSize, iso.keep, hiddenMounts(), iso.binds
		sp.Fence = x.fence
		if c := x.cred; c != nil && c.UID != 0 {
			sp.Cred, sp.NNP = &trampoline.Cred{UID: c.UID, GID: c.GID}, true
		}
	} else {
		sp.NNP = dropPrivileges(cmd, x.cred)
	}
	if cg != nil && cg.dirFD() >= 0 {
		// cgroup v2: the child starts inside its cgroup, before it can fork.
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = cg.dirFD()
	} else if cg != nil {
		// cgroup v1: startProcess joins it before the dev server runs.
		if sp.Cgroups, err = cg.procsFiles(x.cred); err != nil {
			r.Close()
			w.Close()
			keep.Close()
			return nil, fmt.Errorf("cgroup %s: %w", cg.path(), err)
		}
	}
	err = l.startProcess(sb, cmd, sp)
	keep.Close()
	if err != nil {
		if pidfd >= 0 {
			unix.Close(pidfd) // it started, but the start failed after
		}
		r.Close()
		w.Close()
		return nil, err
	}
	w.Close() // the child has its copy; EOF comes when all holders exit
	p := &process{pid: cmd.Process.Pid, cmd: cmd, out: r, pumped: make(chan struct{}), exited: make(chan struct{}),
		lines: make(chan struct{}, 1), cg: cg, sb: sb, log: log}
	go func() {
		defer close(p.pumped)
		pump(r, buf, disk, log, p.lines)
	}()
	// A pidfd lets the waiting goroutine park in the poller (pidfd.go);
	// without one (a kernel before 5.3) cmd.Wait blocks a thread.
	if pidfd >= 0 {
		f, err := ownPidfd(cmd, pidfd)
		if err == nil {
			go p.wait(f, true)
			return p, nil
		}
		log.Warn().Err(err).Msg("pidfd of the dev server")
	}
	f, perr := openPidfd(cmd.Process.Pid)
	if perr != nil {
		log.Warn().Err(perr).Msg("waiting for the dev server on a thread of its own")
	}
	go p.wait(f, false)
	return p, nil
}

// wait collects the exit of p's process and closes p.exited. With a
// pidfd it first parks in the poller until the process has exited, so
// that collecting it holds no thread. released: os/exec let the process
// go (ownPidfd), so wait4 collects it; else cmd.Wait does.
func (p *process) wait(pidfd *os.File, released bool) {
	if pidfd != nil {
		if err := awaitExit(pidfd); err != nil {
			// The collection below blocks a thread instead.
			p.log.Warn().Err(err).Msg("waiting for the dev server on a thread of its own")
		}
	}
	if released {
		var ws syscall.WaitStatus
		for {
			// Our unreaped child: its pid is its own until this returns.
			if _, p.err = syscall.Wait4(p.pid, &ws, 0, nil); p.err != syscall.EINTR {
				break
			}
		}
		if p.err == nil {
			p.status = &ws
		}
	} else {
		p.err = p.cmd.Wait()
		if ps := p.cmd.ProcessState; ps != nil {
			if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
				p.status = &ws
			}
		}
	}
	if pidfd != nil {
		pidfd.Close()
	}
	close(p.exited)
}

// Pid implements lifecycle.Process.
func (p *process) Pid() int { return p.pid }

// Exited implements lifecycle.Process.
func (p *process) Exited() <-chan struct{} { return p.exited }

// ExitDescription implements lifecycle.Process. An adopted process's
// status is its parent's to collect: it ended as "exited".
func (p *process) ExitDescription() string {
	select {
	case <-p.exited:
	default:
		return "not exited"
	}
	ws := p.status
	if ws == nil {
		return "exited"
	}
	if ws.Signaled() {
		return "killed by signal " + ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(ws.ExitStatus())
}

// success reports whether the process exited with status 0.
func (p *process) success() bool {
	return p.status != nil && p.status.Exited() && p.status.ExitStatus() == 0
}

// WaitReady implements lifecycle.Process: it probes until the dev server
// answers. The dev server boots at a lower CPU priority (bootNice) and
// gets the normal one once it is ready: in a start storm, envs already
// serving keep the CPUs; on a quiet machine nothing competes and nothing
// slows.
func (p *process) WaitReady(ctx context.Context, addr netip.AddrPort, pr lifecycle.Probe) error {
	setGroupNice(p.pid, bootNice)
	var silent func() bool
	if ls, ok := p.sb.(listenProber); ok {
		if lp, err := ls.ListenProbe(); err == nil {
			defer lp.Close()
			silent = func() bool {
				up, err := lp.Listening(addr)
				return err == nil && !up
			}
		} else {
			p.log.Debug().Err(err).Msg("readiness probes connect from the start")
		}
	}
	if err := probe(ctx, addr, pr.HTTPPath, p.exited, p.lines, silent); err != nil {
		return err
	}
	setGroupNice(p.pid, 0)
	if p.cg != nil {
		if err := p.cg.serving(); err != nil {
			p.log.Warn().Err(err).Str("cgroup", p.cg.path()).Msg("cannot give the env the CPU weight of a serving one")
		}
	}
	return nil
}

// listenProber is a Sandbox that can tell whether something listens in
// it without connecting (netns.Sandbox): refused probes cost the gateway
// about 0.1 ms of CPU each, the kernel's socket table a few microseconds.
type listenProber interface {
	ListenProbe() (*netns.ListenProbe, error)
}

// Terminate implements lifecycle.Process.
func (p *process) Terminate() { signalGroup(p.pid, syscall.SIGTERM) }

// Kill implements lifecycle.Process.
func (p *process) Kill() { signalGroup(p.pid, syscall.SIGKILL) }

// Deprioritize implements lifecycle.Process.
func (p *process) Deprioritize() { setGroupNice(p.pid, 19) }

// Usage implements lifecycle.Process from the env's cgroup.
func (p *process) Usage() (int64, time.Duration) {
	if p.cg == nil {
		return -1, 0
	}
	return p.cg.memoryUsage(), cgroupCPUTime(p.cg.path())
}

// Record implements lifecycle.Recorded.
func (p *process) Record() lifecycle.ProcessRecord {
	r := lifecycle.ProcessRecord{Pid: p.pid}
	r.PidStart, _ = pidStartTime(p.pid)
	if p.cg != nil {
		r.Cgroup = p.cg.path()
	}
	return r
}

// stop stops p and waits for it: SIGTERM to the group, grace, SIGKILL.
func (p *process) stop(grace time.Duration) {
	p.Terminate()
	t := time.NewTimer(grace)
	select {
	case <-p.exited:
	case <-t.C:
	}
	t.Stop()
	// The group may outlive its leader: kill it either way.
	p.Kill()
	<-p.exited
}

// Release implements lifecycle.Process: it removes the cgroup (killing
// anything left in it) and closes the output pipe, once the sandbox is
// gone. The pump gets EOF when the last writer dies; if a writer escaped,
// closing the read end ends the pump anyway.
func (p *process) Release() {
	if p.cg != nil {
		if err := p.cg.remove(); err != nil {
			p.log.Error().Err(err).Str("cgroup", p.cg.path()).Msg("remove cgroup")
		}
	}
	t := time.NewTimer(time.Second)
	select {
	case <-p.pumped:
	case <-t.C:
	}
	t.Stop()
	p.out.Close()
	<-p.pumped
}

// HandOver implements lifecycle.Recorded: the output pump stops here, and
// the next gateway process gets a new read end of the pipe and a pidfd.
func (p *process) HandOver() (pipe, pidfd *os.File, err error) {
	p.out.SetReadDeadline(time.Now())
	<-p.pumped
	if pipe, err = lifecycle.DupConn(p.out, "output-"+strconv.Itoa(p.pid)); err != nil {
		return nil, nil, err
	}
	fd, err := unix.PidfdOpen(p.pid, 0)
	if err != nil {
		pipe.Close()
		return nil, nil, fmt.Errorf("pidfd: %w", err)
	}
	return pipe, os.NewFile(uintptr(fd), "pidfd-"+strconv.Itoa(p.pid)), nil
}

// bootNice is the nice value of a dev server's process group while it
// boots: a CFS weight of 15, against 1,024 for a serving process. In a
// start storm on a small machine the booting dev servers (each a runtime's
// start-up and its package init) would otherwise take the CPUs from the envs
// already serving; on a quiet machine nothing competes and nothing slows.
// A nice value only orders tasks of one cgroup: an env in a cgroup of its
// own yields to the others by its cgroup's weight (bootCPUShares).
const bootNice = 19

// setGroupNice sets the nice value of every thread in process group pgid.
// A failure costs only the priority: it is ignored.
func setGroupNice(pgid, nice int) { _ = syscall.Setpriority(syscall.PRIO_PGRP, pgid, nice) }

// signalGroup signals every process in group pgid. ESRCH (all gone) is
// the expected outcome of a second signal and is not an error.
func signalGroup(pgid int, sig syscall.Signal) { _ = syscall.Kill(-pgid, sig) }

// reopenOwn opens f's pipe again, as a new open file description.
func reopenOwn(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var path string
	if err := rc.Control(func(fd uintptr) { path = "/proc/self/fd/" + strconv.Itoa(int(fd)) }); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
