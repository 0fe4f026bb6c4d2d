package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/lifecycle"
	"github.com/rs/zerolog"
)

// listenerSet opens the gateway's listeners, reusing inherited sockets
// first: those of the previous process in a zero-downtime restart, or
// systemd's (socket activation). It remembers every listener by the
// configured address it serves, so a restart can pass them all on.
type listenerSet struct {
	log zerolog.Logger

	mu        sync.Mutex
	inherited []inheritedListener // guarded by mu; not yet claimed
	open      []keyedListener     // guarded by mu
}

type inheritedListener struct {
	key string // configured address, or "" when from systemd
	ln  net.Listener
}

type keyedListener struct {
	key string
	ln  *closeNotifyListener
}

// closeNotifyListener tells when it was closed, so a restart can wait
// until this process has stopped accepting before it hands envs over.
type closeNotifyListener struct {
	net.Listener
	once   sync.Once
	closed chan struct{}
}

func (l *closeNotifyListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.closed) })
	return err
}

// listen returns the listeners for addr (one, or two for localhost).
func (s *listenerSet) listen(addr string) ([]net.Listener, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lns []net.Listener
	rest := s.inherited[:0]
	for _, in := range s.inherited {
		if in.key == addr || in.key == "" && addrMatches(addr, in.ln.Addr()) {
			lns = append(lns, in.ln)
			continue
		}
		rest = append(rest, in)
	}
	s.inherited = rest
	if len(lns) > 0 {
		s.log.Info().Str("addr", addr).Int("sockets", len(lns)).Msg("using inherited listening sockets")
	} else {
		var err error
		if lns, err = gateway.Listen(addr, s.log); err != nil {
			return nil, err
		}
	}
	for i, ln := range lns {
		cl := &closeNotifyListener{Listener: ln, closed: make(chan struct{})}
		s.open = append(s.open, keyedListener{key: addr, ln: cl})
		lns[i] = cl
	}
	return lns, nil
}

// tcpPorts returns the ports of the open TCP listeners.
func (s *listenerSet) tcpPorts() []uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ports []uint16
	for _, k := range s.open {
		if ta, ok := k.ln.Addr().(*net.TCPAddr); ok {
			ports = append(ports, uint16(ta.Port))
		}
	}
	return ports
}

// closeUnclaimed closes inherited sockets no configured address asked for
// (the configuration changed across the restart).
func (s *listenerSet) closeUnclaimed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, in := range s.inherited {
		s.log.Warn().Str("addr", in.ln.Addr().String()).Msg("closing an inherited socket the configuration no longer uses")
		in.ln.Close()
	}
	s.inherited = nil
}

// sockets duplicates every open listener's socket, for a new process.
// The duplicates must go over SCM_RIGHTS, not exec's ExtraFiles: exec
// would switch them, and with them the sockets still accepting here, to
// blocking mode.
func (s *listenerSet) sockets() ([]string, []*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	var files []*os.File
	for _, k := range s.open {
		f, err := dupSocket(k.ln.Listener)
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, nil, fmt.Errorf("listener %s: %w", k.key, err)
		}
		keys = append(keys, k.key)
		files = append(files, f)
	}
	return keys, files, nil
}

// waitClosed waits until every open listener has been closed.
func (s *listenerSet) waitClosed() {
	s.mu.Lock()
	open := append([]keyedListener(nil), s.open...)
	s.mu.Unlock()
	for _, k := range open {
		<-k.ln.closed
	}
}

// addrMatches reports whether a socket bound to have serves the configured
// address want: same port, and the same IP, or any IP for a wildcard
// host, or a loopback one for localhost.
func addrMatches(want string, have net.Addr) bool {
	host, port, err := net.SplitHostPort(want)
	ta, ok := have.(*net.TCPAddr)
	if err != nil || !ok || port != strconv.Itoa(ta.Port) {
		return false
	}
	ip, _ := netip.AddrFromSlice(ta.IP)
	switch {
	case host == "":
		return ip.Unmap().IsUnspecified()
	case strings.EqualFold(host, "localhost"):
		return ip.Unmap().IsLoopback()
	}
	w, err := netip.ParseAddr(host)
	return err == nil && w.Unmap() == ip.Unmap()
}

// systemdListeners returns the sockets systemd passed (LISTEN_FDS, for
// this process per LISTEN_PID), and unsets the variables so that children
// do not see them.
func systemdListeners() ([]inheritedListener, error) {
	const firstFD = 3 // SD_LISTEN_FDS_START
	files := activation.Files(true)
	var out []inheritedListener
	for i, f := range files {
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			closeFiles(files[i+1:])
			for _, in := range out {
				in.ln.Close()
			}
			return nil, fmt.Errorf("systemd socket fd %d: %w (only stream sockets are supported)", firstFD+i, err)
		}
		out = append(out, inheritedListener{ln: ln})
	}
	return out, nil
}

// handoffEnvVar names, in a successor, the descriptor of the control
// socket to its predecessor (see handoff.go).
const handoffEnvVar = "ENVGATE_HANDOFF"

// dupSocket duplicates ln's descriptor without touching its blocking mode
// (TCPListener.File's result would switch to blocking on its first Fd).
func dupSocket(ln net.Listener) (*os.File, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("%T has no descriptor", ln)
	}
	return lifecycle.DupConn(sc, ln.Addr().String())
}
