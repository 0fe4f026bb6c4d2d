package devserver

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver/trampoline"
	"golang.org/x/sys/unix"
)

// Joining a cgroup v1 without the trampoline. v1 membership is per
// thread, and a child starts in the cgroups of the thread that forked
// it. So the thread that forks the dev server (a locked one, the sandbox
// switches its network namespace) moves itself into the env's cgroups
// through their tasks files, forks, and moves back: the dev server is in
// its cgroup from its first instruction, without the trampoline's extra
// exec of the gateway binary. While the thread is inside, it counts
// against the env's pids limit and the env's cgroup.procs lists the
// gateway; the env's cgroup is new and empty then, and killUntilEmpty
// never signals the gateway itself.
// Pages the gateway touches meanwhile stay charged to the gateway: memcg
// charges them to the cgroup of the memory's owner, the gateway's main
// thread (only a few kernel objects the thread allocates go to the env).

// threadStarter is a Sandbox that runs hooks on the thread that forks the
// dev server (netns.Sandbox.StartWith).
type threadStarter interface {
	StartWith(cmd *exec.Cmd, before, after func() error) error
}

// errCannotCarry means the forking thread did not move, and the
// trampoline must join the cgroups instead: the thread's own cgroups are
// not under cgroupMount (a cgroup namespace whose paths differ from the
// mounts', say), so it could not move back; or errMainThread.
var errCannotCarry = errors.New("devserver: the forking thread cannot carry the dev server into its cgroups")

// errMainThread: the forking thread is the gateway's main thread, which
// owns the gateway's memory. While it visited an env, memcg would charge
// to the env every page any gateway thread faults in.
var errMainThread = fmt.Errorf("%w: it is the main thread", errCannotCarry)

// startProcess starts cmd in sb. sp.Cgroups lists the cgroup v1
// cgroup.procs files of the env's cgroups (none on v2 or without
// cgroups). Only the trampoline can do the rest of sp (no_new_privs,
// rlimits, isolation), and it joins the cgroups too then; else the
// forking thread carries the dev server into them, if sb can run hooks on
// that thread.
func (l *Launcher) startProcess(sb lifecycle.Sandbox, cmd *exec.Cmd, sp trampoline.Spec) error {
	if ts, ok := sb.(threadStarter); ok && len(sp.Cgroups) > 0 && !sp.NNP && !sp.Init && len(sp.Rlimits) == 0 {
		err := startInCgroupsV1(ts, cmd, sp.Cgroups)
		if !errors.Is(err, errCannotCarry) {
			return err
		}
		// Nothing started, nothing moved: the trampoline can do it.
	}
	l.viaTrampoline(cmd, sp)
	if ts, ok := sb.(threadStarter); ok {
		// A child starts with its forking thread's nice value: so the
		// trampoline and the dev server boot at bootNice from their first
		// instruction (the Go runtime's start-up included), not from when
		// the start gets round to setGroupNice.
		return ts.StartWith(cmd, func() error { return setThreadNice(bootNice) }, func() error { return setThreadNice(0) })
	}
	st, ok := sb.(starter)
	if !ok {
		return fmt.Errorf("devserver: a %T cannot start processes", sb)
	}
	return st.Start(cmd)
}

// starter is a Sandbox that starts processes inside itself
// (netns.Sandbox.Start).
type starter interface {
	Start(cmd *exec.Cmd) error
}

// setThreadNice sets the nice value of the calling OS thread only (on
// Linux, PRIO_PROCESS with a thread ID names that thread).
func setThreadNice(nice int) error {
	if err := unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), nice); err != nil {
		return fmt.Errorf("devserver: nice %d: %w", nice, err)
	}
	return nil
}

// startInCgroupsV1 starts cmd in sb with the forking thread in the
// cgroups of the cgroup.procs files join for the duration of the fork.
func startInCgroupsV1(sb threadStarter, cmd *exec.Cmd, join []string) error {
	var left []string // tasks files of the thread's own cgroups it left
	before := func() error {
		if unix.Gettid() == os.Getpid() {
			return errMainThread
		}
		homes, err := threadHomes(join)
		if err != nil {
			return err
		}
		for i, f := range join {
			if err := writeTasks(filepath.Join(filepath.Dir(f), "tasks")); err != nil {
				return fmt.Errorf("devserver: join cgroup %s: %w", filepath.Dir(f), err)
			}
			left = append(left, homes[i])
		}
		return nil
	}
	after := func() error {
		var errs []error
		for _, f := range left {
			if err := writeTasks(f); err != nil {
				errs = append(errs, fmt.Errorf("devserver: return to cgroup %s: %w", filepath.Dir(f), err))
			}
		}
		return errors.Join(errs...)
	}
	// StartWith's goroutine usually runs on the caller's thread, which is
	// now and then the main thread: hold that one, the goroutine then runs
	// on another.
	runtime.LockOSThread()
	if unix.Gettid() == os.Getpid() {
		defer runtime.UnlockOSThread()
	} else {
		runtime.UnlockOSThread()
	}
	err := sb.StartWith(cmd, before, after)
	if err != nil && cmd.Process != nil {
		// It started, but its thread could not go back (the runtime
		// discards that thread). Fail the start like any other; the
		// caller removes the cgroup with whatever the child forked.
		signalGroup(cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}
	return err
}

// threadHomes returns, for each cgroup.procs file in join, the tasks file
// of the calling thread's own cgroup in the same hierarchy.
func threadHomes(join []string) ([]string, error) {
	b, err := os.ReadFile("/proc/thread-self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errCannotCarry, err)
	}
	own := map[string]string{} // controller -> path
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// "4:memory:/a/b", "2:cpu,cpuacct:/", "0::/" (v2)
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, ctrl := range strings.Split(parts[1], ",") {
			own[ctrl] = parts[2]
		}
	}
	homes := make([]string, len(join))
	for i, f := range join {
		ctrl, _, _ := strings.Cut(strings.TrimPrefix(f, cgroupMount+"/"), "/")
		p, ok := own[ctrl]
		if !ok {
			return nil, fmt.Errorf("%w: no %s line in /proc/thread-self/cgroup", errCannotCarry, ctrl)
		}
		homes[i] = filepath.Join(cgroupMount, ctrl, p, "tasks")
		if _, err := os.Stat(homes[i]); err != nil {
			return nil, fmt.Errorf("%w: %w", errCannotCarry, err)
		}
	}
	return homes, nil
}

// writeTasks moves the calling thread into the cgroup of a v1 tasks file.
// It writes "0", not the thread's ID: for the caller itself the kernel
// skips the global cgroup_threadgroup_rwsem, whose write lock waits for
// an RCU grace period (5-10 ms here, most of the cost of joining).
func writeTasks(file string) error {
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte("0"))
	return errors.Join(err, f.Close())
}
