package devserver

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/envgate/envgate/lifecycle"
	"golang.org/x/sys/unix"
)

// Adopt implements lifecycle.Adopter: the dev server req names, started
// by an earlier gateway process, is watched through its pidfd and its
// output read from req.Pipe; its cgroup, found by the env's name under
// CgroupParent, is its own again.
func (l *Launcher) Adopt(req lifecycle.AdoptRequest) (lifecycle.Process, error) {
	pidfd, err := pollablePidfd(req.PidFD)
	if err != nil {
		req.Pipe.Close()
		return nil, err
	}
	p := &process{
		pid:    req.Pid,
		out:    req.Pipe,
		pumped: make(chan struct{}),
		exited: make(chan struct{}),
		log:    req.Log,
	}
	if l.cfg.CgroupParent != "" {
		path := envCgroupPath(l.cfg.CgroupParent, req.Env)
		if cg, err := loadCgroup(path); err == nil {
			p.cg = cg
		} else {
			req.Log.Warn().Err(err).Str("cgroup", path).Msg("adopted env has no cgroup: no limits, no memory figure")
		}
	}
	disk := l.diskLog(req.Env)
	go func() {
		defer close(p.pumped)
		pump(p.out, req.Output, disk, req.Log.With().Str("stream", "output").Logger(), nil)
	}()
	go func() {
		defer close(p.exited)
		defer pidfd.Close()
		if err := awaitExit(pidfd); err != nil {
			// Not pollable after all: wait on a thread.
			waitPidfd(pidfd)
		}
	}()
	return p, nil
}

// Check implements lifecycle.Adopter.
func (l *Launcher) Check(r lifecycle.ProcessRecord) error {
	if start, err := pidStartTime(r.Pid); err != nil || start != r.PidStart {
		return lifecycle.ErrProcessGone
	}
	return checkRecorded(r)
}

// Pin implements lifecycle.Adopter.
func (l *Launcher) Pin(r lifecycle.ProcessRecord) (pipe, pidfd *os.File, err error) {
	fd, err := unix.PidfdOpen(r.Pid, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("pidfd: %w", err)
	}
	pidfd = os.NewFile(uintptr(fd), "pidfd-"+strconv.Itoa(r.Pid))
	// The pidfd pins this very process: check again that it is the one
	// recorded, not a successor that got the pid in between.
	if start, err := pidStartTime(r.Pid); err != nil || start != r.PidStart {
		pidfd.Close()
		return nil, nil, errors.New("the process exited while being adopted")
	}
	if pipe, err = reopenOutput(r.Pid); err != nil {
		pidfd.Close()
		return nil, nil, err
	}
	return pipe, pidfd, nil
}

// KillRecorded implements lifecycle.Adopter: the sandbox GC that follows
// kills whatever left the group (setsid).
func (l *Launcher) KillRecorded(r lifecycle.ProcessRecord) { signalGroup(r.Pid, syscall.SIGKILL) }

// reopenOutput opens a new read end of pid's output pipe through the
// descriptor the dev server itself holds (outputFD), after checking that
// it is the pipe its stdout writes to.
func reopenOutput(pid int) (*os.File, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	var rd, wr syscall.Stat_t
	if err := syscall.Stat(dir+strconv.Itoa(outputFD), &rd); err != nil {
		return nil, fmt.Errorf("output pipe: %w", err)
	}
	if err := syscall.Stat(dir+"1", &wr); err != nil {
		return nil, fmt.Errorf("output pipe: %w", err)
	}
	if rd.Mode&syscall.S_IFMT != syscall.S_IFIFO || rd.Ino != wr.Ino || rd.Dev != wr.Dev {
		return nil, errors.New("output pipe: the dev server's descriptors are not the gateway's pipe")
	}
	f, err := os.OpenFile(dir+strconv.Itoa(outputFD), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("output pipe: %w", err)
	}
	return f, nil
}

// pidStartTime returns field 22 (starttime) of /proc/PID/stat; a process
// gone or exited (zombie) is an error.
func pidStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces and ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("devserver: /proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("devserver: /proc/%d/stat: malformed", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, fmt.Errorf("devserver: process %d has exited", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// waitPidfd blocks until the process behind f has exited. The pidfd polls
// readable on exit, for non-children too.
func waitPidfd(f *os.File) {
	fd := int(f.Fd())
	for {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, -1)
		if n > 0 || err != nil && !errors.Is(err, syscall.EINTR) {
			return
		}
	}
}
