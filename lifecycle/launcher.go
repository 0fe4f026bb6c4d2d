package lifecycle

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// Launcher runs dev servers: the Manager decides when an env starts and
// stops, a Launcher how. lifecycle/devserver runs real processes (in the
// Network's sandboxes, as the env's user, in its cgroup); tests of the
// state machine use a fake. Only Launch is required; a Launcher may also
// implement Adopter (restarts and crash recovery), LogKeeper (output on
// disk), Sweeper (leftovers of earlier runs) and TemplateChecker.
type Launcher interface {
	// Launch starts the dev server of req.Env inside req.Sandbox and
	// returns it running, not necessarily ready yet. What must come
	// first (the env's checkout and its prepare steps) runs before,
	// within the template's PrepareTimeout, which the Launcher applies;
	// ctx ends when the Manager closes. The dev server's output goes to
	// req.Output. On error nothing it started is left running (the
	// Manager destroys the sandbox); a *PrepareError says which prepare
	// step failed (TimedOut when PrepareTimeout passed).
	Launch(ctx context.Context, req LaunchRequest) (Process, error)
}

// LaunchRequest is what a Launcher is told to start one env's dev server.
type LaunchRequest struct {
	Env      string
	Template *Template
	// DataDir is the env's data dir, made (0700, the gateway's) by the
	// Manager; the Launcher gives it to the user the dev server runs as.
	DataDir string
	// Sandbox is where the dev server runs, made by Config.Network.
	Sandbox Sandbox
	// Output is the env's output, kept across its starts.
	Output *Output
	// Fence is the env's claim in cluster mode (Config.Ownership): an
	// isolated env's init holds the env's data dir with it (see Fence).
	// Zero: no fence.
	Fence Fence
	// Updating, if set, is told the commit whose prepare steps run now,
	// and "" once they are done (Progress shows it).
	Updating func(commit string)
	// Log is the env's logger.
	Log zerolog.Logger
}

// Process is one dev server, started by a Launcher (or adopted by an
// Adopter). Its methods are safe for concurrent use.
type Process interface {
	// Pid is the process ID, which leads the dev server's process group:
	// for logs, listings and the state file.
	Pid() int
	// Exited is closed once the process has exited.
	Exited() <-chan struct{}
	// ExitDescription says how the process ended ("exit status 1",
	// "killed by signal killed"), or "not exited".
	ExitDescription() string
	// WaitReady returns nil once the dev server answers at addr as probe
	// asks, ErrExited if it exits first, or ctx's cause when ctx ends.
	WaitReady(ctx context.Context, addr netip.AddrPort, probe Probe) error
	// Terminate asks the process group to stop (SIGTERM), and Kill makes
	// it (SIGKILL); neither waits. Whatever left the group is the
	// sandbox's Destroy to kill.
	Terminate()
	Kill()
	// Deprioritize gives the process group the lowest CPU priority: its
	// shutdown is not urgent (an idle reap), so envs still serving go
	// first.
	Deprioritize()
	// Release frees what the process still holds (its cgroup, with
	// anything left in it; its output pipe) once it has exited and its
	// sandbox is gone. It is called once.
	Release()
	// Usage is the env's memory use in bytes, without page cache the
	// kernel can drop (-1 when unknown), and its CPU time so far (0 when
	// unknown). Admission evicts the largest first when memory is short.
	Usage() (memory int64, cpu time.Duration)
}

// ErrExited is Process.WaitReady's error for a dev server that exited
// before it was ready.
var ErrExited = errors.New("dev server exited before it was ready")

// ErrProcessGone is Adopter.Check's error for a recorded dev server that
// is no longer alive (or whose pid another process has now).
var ErrProcessGone = errors.New("lifecycle: recorded dev server is gone")

// ProcessRecord identifies a running dev server in the state file.
type ProcessRecord struct {
	// Pid leads the dev server's process group.
	Pid int
	// PidStart is the process's start time (clock ticks since boot): a
	// pid reused by another process has another.
	PidStart uint64
	// Cgroup is the env's cgroup, below the hierarchy roots; "" for none.
	Cgroup string
	// Namespace is the path of the env's sandbox, if it has one.
	Namespace string
}

// Recorded is a Process that the state file can name, and that can be
// handed to the next gateway process.
type Recorded interface {
	Process
	// Record identifies the process (Namespace is the Manager's to fill).
	Record() ProcessRecord
	// HandOver stops reading the output here and returns a new read end
	// of the output pipe and a pidfd of the process, for the next
	// gateway process; the caller owns both.
	HandOver() (pipe, pidfd *os.File, err error)
}

// AdoptRequest is a running dev server another gateway process started,
// to be taken over.
type AdoptRequest struct {
	Env      string
	Template *Template
	Pid      int
	// Pipe is a read end of its output pipe, PidFD a pidfd of it; the
	// Adopter owns both from the call on, and closes them on error.
	Pipe, PidFD *os.File
	// Sandbox is the env's sandbox, taken over from the Network.
	Sandbox Sandbox
	// Output is the env's output; Log its logger.
	Output *Output
	Log    zerolog.Logger
}

// Adopter is a Launcher that can take over dev servers started by an
// earlier gateway process: handed over at a restart (TakeOver) or found
// alive from the state file after a crash (Recover).
type Adopter interface {
	// Adopt takes over the running dev server of req.
	Adopt(req AdoptRequest) (Process, error)
	// Check vets a state file record before it is signalled or adopted:
	// ErrProcessGone when its process is gone, an error wrapping
	// ErrRecordRefused when the record does not name a dev server of a
	// sandbox of ours.
	Check(r ProcessRecord) error
	// Pin opens a pidfd of the recorded process, checks it is still the
	// one recorded, and opens a new read end of its output pipe.
	Pin(r ProcessRecord) (pipe, pidfd *os.File, err error)
	// KillRecorded SIGKILLs the process group of a record that passed
	// Check.
	KillRecorded(r ProcessRecord)
}

// LogKeeper is a Launcher that keeps envs' output on disk.
type LogKeeper interface {
	// LogFile is where env's output is kept, "" if it is not; the file
	// may not exist yet.
	LogFile(env string) string
	// RemoveLogs deletes env's log files.
	RemoveLogs(env string) error
}

// Sweeper is a Launcher that can remove what dev servers of an earlier
// run left behind (cgroups).
type Sweeper interface {
	// Sweep removes what belongs to no env of running (env names).
	// Recover calls it with the envs it adopted, Close with none.
	Sweep(running []string)
}

// TemplateChecker is a Launcher that must accept each template before
// the Manager runs it (New fails otherwise).
type TemplateChecker interface {
	CheckTemplate(t *Template) error
}

// stopProcess stops p: SIGTERM to its group, up to grace for it to exit,
// then SIGKILL to the group (which may outlive its leader), and returns
// once it has exited. With nice, the shutdown runs at the lowest CPU
// priority.
func stopProcess(p Process, grace time.Duration, nice bool) {
	if nice {
		p.Deprioritize()
	}
	p.Terminate()
	t := time.NewTimer(grace)
	select {
	case <-p.Exited():
	case <-t.C:
	}
	t.Stop()
	p.Kill()
	<-p.Exited()
}
