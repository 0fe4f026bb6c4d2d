package lifecycle

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// process is one running dev server.
type process struct {
	cmd    *exec.Cmd
	out    *os.File      // read end of the output pipe; closed after stop
	pumped chan struct{} // closed when the output pump has finished
	exited chan struct{} // closed once Wait has returned
	lines  chan struct{} // gets a value (if there is room) per line of output
	state  *os.ProcessState
	err    error     // from Wait; read after exited is closed
	cg     envCgroup // the env's cgroup; nil without cgroups
	// record is the env's encoded state file record (statefile.go), made
	// once; guarded by its env's mu.
	record []byte
}

// spawn starts x inside sb with its stdout and stderr in one pipe (so the
// order of lines is kept) pumped into buf and the log. The dev server
// leads a process group of its own so stop can signal all of it.
func spawn(sb Sandbox, x expanded, baseEnv []string, cg envCgroup, buf *outputBuffer, log zerolog.Logger) (*process, error) {
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
	// and the next gateway reopens it (Recover). It is a separate open of
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
	sp := launchSpec{Rlimits: x.rlimits}
	if iso := x.iso; iso != nil {
		// The trampoline, as root, sets the namespaces up and drops
		// privileges for the dev server it starts (pidinit.go).
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWPID | syscall.CLONE_NEWNS
		sp.Init, sp.TmpSize, sp.Keep, sp.Hide, sp.Binds = true, iso.tmpSize, iso.keep, hiddenMounts(), iso.binds
		if c := x.cred; c != nil && c.uid != 0 {
			sp.Cred, sp.NNP = &specCred{c.uid, c.gid}, true
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
	err = startProcess(sb, cmd, sp)
	keep.Close()
	if err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	w.Close() // the child has its copy; EOF comes when all holders exit
	p := &process{cmd: cmd, out: r, pumped: make(chan struct{}), exited: make(chan struct{}), lines: make(chan struct{}, 1), cg: cg}
	go func() {
		defer close(p.pumped)
		pump(r, buf, log, p.lines)
	}()
	// A pidfd lets the waiting goroutine park in the poller (pidfd.go);
	// without one (a kernel before 5.3) cmd.Wait blocks a thread.
	pidfd, perr := openPidfd(cmd.Process.Pid)
	if perr != nil {
		log.Warn().Err(perr).Msg("waiting for the dev server on a thread of its own")
	}
	go p.wait(pidfd, log)
	return p, nil
}

// wait collects the exit of p's process and closes p.exited.
func (p *process) wait(pidfd *os.File, log zerolog.Logger) {
	if pidfd != nil {
		if err := awaitExit(pidfd); err != nil {
			log.Warn().Err(err).Msg("waiting for the dev server on a thread of its own")
		}
		pidfd.Close()
	}
	p.err = p.cmd.Wait()
	p.state = p.cmd.ProcessState
	close(p.exited)
}

// Pid is the dev server's process ID (and process group ID).
func (p *process) Pid() int { return p.cmd.Process.Pid }

// exitDescription says how the process ended, for errors and logs.
func (p *process) exitDescription() string {
	if p.state == nil {
		return "not exited"
	}
	if ws, ok := p.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by signal " + ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(p.state.ExitCode())
}

// stop sends SIGTERM to the process group, waits up to grace for the
// leader to exit, then SIGKILLs the group. Processes that left the group
// (setsid) are the sandbox's business: its Destroy kills everything inside.
func (p *process) stop(grace time.Duration, nice bool) {
	pgid := p.Pid()
	if nice {
		// Nobody waits for this shutdown (an idle reap): let envs still
		// serving go first.
		syscall.Setpriority(syscall.PRIO_PGRP, pgid, 19)
	}
	signalGroup(pgid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
	}
	// The group may outlive its leader: kill it either way.
	signalGroup(pgid, syscall.SIGKILL)
	<-p.exited
}

// release removes the cgroup (killing anything left in it) and closes the
// output pipe, once the sandbox is gone. The pump gets EOF when the last
// writer dies; if a writer escaped, closing the read end ends the pump
// anyway.
func (p *process) release(log zerolog.Logger) {
	if p.cg != nil {
		if err := p.cg.remove(); err != nil {
			log.Error().Err(err).Str("cgroup", p.cg.path()).Msg("remove cgroup")
		}
	}
	select {
	case <-p.pumped:
	case <-time.After(time.Second):
	}
	p.out.Close()
	<-p.pumped
}

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
