package main

// Zero-downtime restart, the way HAProxy's seamless reload and tableflip
// do it. On SIGHUP or SIGUSR2 the running gateway (the predecessor)
// re-executes its binary (the successor) with a unix socket to talk over,
// and then:
//
//  1. predecessor -> successor: the listening sockets (SCM_RIGHTS). The
//     successor opens no listener of its own for those addresses, so no
//     connection is ever refused: they wait in the shared accept queue.
//  2. successor -> predecessor: "ready" once its config, certificates and
//     servers are set up. A successor that fails before this point changes
//     nothing: the predecessor logs why and goes on serving.
//  3. The predecessor stops accepting and hands its ready envs over
//     (lifecycle.Manager.Handoff): names, pids, and as descriptors each
//     dev server's output pipe and a pidfd. It keeps serving the requests
//     and connections it has, on those same envs, for up to
//     shutdown_timeout, then closes what is left and exits WITHOUT
//     stopping the envs.
//  4. The successor adopts the envs (lifecycle.Manager.TakeOver: the
//     namespaces through netns.Manager.Adopt), removes whatever else of the
//     instance exists (netns GC), starts accepting and says "serving"; it
//     also tells systemd its pid (MAINPID=, READY=1).
//
// The instance lock is re-taken by the successor as soon as the
// predecessor exits and drops it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/netns"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// successorTimeout bounds each wait on the successor: its set-up before
// "ready", and its adoption of the envs before "serving".
const successorTimeout = 60 * time.Second

// handoffMsg is one message on the control socket.
type handoffMsg struct {
	Type string                `json:"type"` // listeners, ready, envs, done, serving
	Keys []string              `json:"keys,omitempty"`
	Envs []lifecycle.HandedEnv `json:"envs,omitempty"`
	Pid  int                   `json:"pid,omitempty"`
	// ClusterLease, with listeners: the cluster session's lease, which the
	// successor keeps (its owner keys stay).
	ClusterLease int64 `json:"cluster_lease,omitempty"`
}

// ctlConn is a SOCK_SEQPACKET unix socket: one message per packet, with
// descriptors alongside.
type ctlConn struct{ c *net.UnixConn }

const maxFDsPerMsg = 250 // the kernel's SCM_MAX_FD is 253

func (c ctlConn) send(m handoffMsg, files []*os.File) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.c.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("handoff: send %s: %w", m.Type, err)
	}
	return nil
}

func (c ctlConn) recv(timeout time.Duration) (handoffMsg, []*os.File, error) {
	var m handoffMsg
	c.c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 4<<20)
	oob := make([]byte, unix.CmsgSpace(4*maxFDsPerMsg))
	n, oobn, _, _, err := c.c.ReadMsgUnix(buf, oob)
	if err != nil {
		return m, nil, fmt.Errorf("handoff: receive: %w", err)
	}
	if n == 0 {
		return m, nil, errors.New("handoff: the other process closed the control socket")
	}
	var files []*os.File
	cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return m, nil, fmt.Errorf("handoff: control message: %w", err)
	}
	for _, cm := range cmsgs {
		fds, err := unix.ParseUnixRights(&cm)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "handoff-"+strconv.Itoa(fd)))
		}
	}
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		closeFiles(files)
		return m, nil, fmt.Errorf("handoff: message: %w", err)
	}
	return m, files, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// expect receives a message of type typ.
func (c ctlConn) expect(typ string, timeout time.Duration) (handoffMsg, []*os.File, error) {
	m, files, err := c.recv(timeout)
	if err == nil && m.Type != typ {
		closeFiles(files)
		err = fmt.Errorf("handoff: got %q, want %q", m.Type, typ)
	}
	return m, files, err
}

// predecessor is, in a successor, the process it takes over from.
type predecessor struct {
	ctl ctlConn
	log zerolog.Logger
	// lease is the predecessor's cluster session lease, 0 if none.
	lease int64
}

// clusterLease is the cluster session lease to inherit: 0 without a
// predecessor.
func (p *predecessor) clusterLease() int64 {
	if p == nil {
		return 0
	}
	return p.lease
}

// inheritListeners finds inherited listening sockets: from a predecessor
// (then it returns it) or from systemd.
func inheritListeners(log zerolog.Logger) (*predecessor, *listenerSet, error) {
	lset := &listenerSet{log: log}
	v := os.Getenv(handoffEnvVar)
	os.Unsetenv(handoffEnvVar)
	if v == "" {
		inh, err := systemdListeners()
		lset.inherited = inh
		return nil, lset, err
	}
	fd, err := strconv.Atoi(v)
	if err != nil {
		return nil, nil, fmt.Errorf("%s=%q: want a descriptor number", handoffEnvVar, v)
	}
	f := os.NewFile(uintptr(fd), "handoff-control")
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("handoff: control socket: %w", err)
	}
	p := &predecessor{ctl: ctlConn{fc.(*net.UnixConn)}, log: log}
	m, files, err := p.ctl.expect("listeners", successorTimeout)
	if err != nil {
		return nil, nil, err
	}
	if len(files) != len(m.Keys) {
		closeFiles(files)
		return nil, nil, fmt.Errorf("handoff: %d listener keys for %d sockets", len(m.Keys), len(files))
	}
	for i, f := range files {
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("handoff: listener %s: %w", m.Keys[i], err)
		}
		lset.inherited = append(lset.inherited, inheritedListener{key: m.Keys[i], ln: ln})
	}
	p.lease = m.ClusterLease
	log.Info().Int("listeners", len(files)).Msg("taking over from the previous gateway process")
	return p, lset, nil
}

// lockInstance takes the instance lock once the predecessor, which holds
// it until it exits, has let go. It does not wait for that.
func (p *predecessor) lockInstance(cfg *Config) (func(), error) {
	path := filepath.Join(cfg.runDir(), cfg.Instance+".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	go func() {
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			p.log.Error().Err(err).Str("lock", path).Msg("taking the instance lock over")
			return
		}
		p.log.Debug().Msg("instance lock taken over")
	}()
	return func() { f.Close() }, nil
}

// ready tells the predecessor this process is ready to take over. Until
// it is sent, a failure here changes nothing: the predecessor serves on.
func (p *predecessor) ready() error {
	return p.ctl.send(handoffMsg{Type: "ready", Pid: os.Getpid()}, nil)
}

// takeOver, after ready, adopts the envs the predecessor hands over and
// removes every other namespace of the instance.
func (p *predecessor) takeOver(envs *lifecycle.Manager, nsm *netns.Manager) error {
	var handed []lifecycle.HandedEnv
	for {
		m, files, err := p.ctl.recv(successorTimeout)
		if err != nil {
			return err
		}
		if m.Type == "done" {
			break
		}
		if m.Type != "envs" || len(files) != 2*len(m.Envs) {
			closeFiles(files)
			return fmt.Errorf("handoff: unexpected %q message with %d descriptors", m.Type, len(files))
		}
		for i := range m.Envs {
			m.Envs[i].Output, m.Envs[i].PidFD = files[2*i], files[2*i+1]
		}
		handed = append(handed, m.Envs...)
	}
	if err := envs.TakeOver(handed); err != nil {
		p.log.Warn().Err(err).Msg("some envs could not be taken over; they start afresh on their next request")
	}
	keep := map[string]bool{}
	for _, in := range envs.List() {
		keep[in.Name] = true
	}
	p.lockedCleanup(nsm, keep)
	p.log.Info().Int("envs", len(keep)).Msg("envs taken over")
	return nil
}

// lockedCleanup removes what the instance has besides keep, once the
// predecessor has handed over.
func (p *predecessor) lockedCleanup(nsm *netns.Manager, keep map[string]bool) {
	if left, err := nsm.GC(keep); err != nil {
		p.log.Error().Err(err).Msg("removing namespaces not handed over")
	} else if !left.Empty() {
		p.log.Warn().Strs("namespaces", left.Namespaces).Msg("removed namespaces not handed over")
	}
}

// serving tells the predecessor, and systemd, that this process serves.
func (p *predecessor) serving() {
	if err := p.ctl.send(handoffMsg{Type: "serving", Pid: os.Getpid()}, nil); err != nil {
		p.log.Warn().Err(err).Msg("telling the previous process we serve")
	}
	p.ctl.c.Close()
}

// restartSignals are the signals that restart the gateway in place.
var restartSignals = []os.Signal{syscall.SIGHUP, syscall.SIGUSR2}

// runUntilStop serves until ctx ends, restarting in place on SIGHUP or
// SIGUSR2. It returns handedOff true when a successor took the envs over:
// then stopServing has been called and the caller must drain and exit
// without stopping envs. On return without a handoff the caller stops.
func runUntilStop(ctx context.Context, stopServing context.CancelFunc, pred *predecessor, lset *listenerSet,
	envs *lifecycle.Manager, cl *clusterMode, cfg *Config, log zerolog.Logger) (handedOff bool) {
	if pred != nil {
		pred.serving()
	}
	writePidFile(cfg, log)
	sdNotify(log, fmt.Sprintf("READY=1\nMAINPID=%d", os.Getpid()))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, restartSignals...)
	defer signal.Stop(sig)
	for {
		select {
		case <-ctx.Done():
			return false
		case s := <-sig:
			log.Info().Str("signal", s.String()).Msg("restarting: starting the new gateway process")
			if restart(stopServing, lset, envs, cl, cfg, log) {
				return true
			}
		}
	}
}

// restart runs steps 1-3 of the handoff. It returns false, with this
// process still serving, if the successor failed before it took anything.
func restart(stopServing context.CancelFunc, lset *listenerSet, envs *lifecycle.Manager, cl *clusterMode, cfg *Config, log zerolog.Logger) bool {
	s, err := startSuccessor(lset, cl.lease(), log)
	if err != nil {
		log.Error().Err(err).Msg("restart failed; still serving")
		return false
	}
	stopServing()
	lset.waitClosed()
	hctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.ShutdownTimeout))
	handed, err := envs.Handoff(hctx)
	cancel()
	if err != nil {
		log.Error().Err(err).Msg("handing envs over")
	}
	if err := s.handEnvs(handed); err != nil {
		log.Error().Err(err).Msg("handing envs over; the new process will start them afresh")
	}
	m, _, err := s.ctl.expect("serving", successorTimeout)
	if err != nil {
		log.Error().Err(err).Msg("the new gateway process did not confirm it serves")
	} else {
		log.Info().Int("pid", m.Pid).Int("envs", len(handed)).Msg("new gateway process serving; draining")
	}
	s.ctl.c.Close()
	// It keeps the cluster session, and with it the envs' owner keys.
	cl.handOff()
	// The successor is on its own now: do not wait for it, and let it
	// outlive us.
	go s.cmd.Wait()
	return true
}

type successor struct {
	cmd *exec.Cmd
	ctl ctlConn
}

// startSuccessor re-executes this binary with the same arguments, passes
// it the listeners and waits until it is ready to take over.
func startSuccessor(lset *listenerSet, clusterLease int64, log zerolog.Logger) (*successor, error) {
	keys, files, err := lset.sockets()
	if err != nil {
		return nil, err
	}
	defer closeFiles(files)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("restart: socketpair: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "handoff-ours"), os.NewFile(uintptr(fds[1]), "handoff-theirs")
	defer theirs.Close() // on the ways out before the start
	fc, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		return nil, fmt.Errorf("restart: control socket: %w", err)
	}
	ctl := ctlConn{fc.(*net.UnixConn)}
	exe, err := os.Executable()
	if err != nil {
		ctl.c.Close()
		return nil, fmt.Errorf("restart: %w", err)
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	cmd.Env = append(os.Environ(), handoffEnvVar+"=3")
	err = cmd.Start()
	// The child has its copy: with ours closed, its exit closes the
	// socket, and a receive below fails then rather than at its timeout.
	theirs.Close()
	if err != nil {
		ctl.c.Close()
		return nil, fmt.Errorf("restart: start %s: %w", exe, err)
	}
	s := &successor{cmd: cmd, ctl: ctl}
	fail := func(err error) (*successor, error) {
		cmd.Process.Kill()
		cmd.Wait()
		ctl.c.Close()
		return nil, err
	}
	if err := ctl.send(handoffMsg{Type: "listeners", Keys: keys, ClusterLease: clusterLease}, files); err != nil {
		return fail(err)
	}
	m, _, err := ctl.expect("ready", successorTimeout)
	if err != nil {
		return fail(fmt.Errorf("restart: new process (pid %d) did not get ready: %w", cmd.Process.Pid, err))
	}
	log.Info().Int("pid", m.Pid).Msg("new gateway process ready to take over")
	return s, nil
}

// handEnvs sends the envs and their descriptors, then "done", and closes
// this process's copies of the descriptors.
func (s *successor) handEnvs(handed []lifecycle.HandedEnv) error {
	var errs []error
	const perMsg = maxFDsPerMsg / 2
	for i := 0; i < len(handed); i += perMsg {
		chunk := handed[i:min(i+perMsg, len(handed))]
		var files []*os.File
		for _, h := range chunk {
			files = append(files, h.Output, h.PidFD)
		}
		errs = append(errs, s.ctl.send(handoffMsg{Type: "envs", Envs: chunk}, files))
		closeFiles(files)
	}
	errs = append(errs, s.ctl.send(handoffMsg{Type: "done"}, nil))
	return errors.Join(errs...)
}

// pidFile is where the serving process of an instance writes its pid, for
// `kill -HUP $(cat ...)` and tests.
func pidFile(cfg *Config) string {
	return filepath.Join(cfg.runDir(), cfg.Instance+".pid")
}

func writePidFile(cfg *Config, log zerolog.Logger) {
	path := pidFile(cfg)
	tmp := path + ".tmp" + strconv.Itoa(os.Getpid())
	err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		log.Warn().Err(err).Msg("writing the pid file")
	}
}

// removePidFile removes the pid file if it still names this process.
func removePidFile(cfg *Config) {
	path := pidFile(cfg)
	if b, err := os.ReadFile(path); err == nil && string(b) == strconv.Itoa(os.Getpid())+"\n" {
		os.Remove(path)
	}
}

// sdNotify sends state to systemd's notify socket, if there is one. The
// variable stays set: a successor started by a restart in place notifies
// too (MAINPID=).
func sdNotify(log zerolog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn().Err(err).Msg("sd_notify")
	}
}
