package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// pprofEnv names the environment variable that, set to a loopback address
// such as 127.0.0.1:6060 or to a Unix socket path, makes `envgate serve`
// serve net/http/pprof there. It is off by default: profiles reveal
// internals and cost CPU while taken. The benchmark script
// (loadtest/bench/run.sh) uses it to profile the warm path.
const pprofEnv = "ENVGATE_PPROF"

// startPprof starts the profiling server when $ENVGATE_PPROF is set and
// returns the function that stops it; an address that is neither loopback
// nor a Unix socket path is an error. The handlers live on a mux of their
// own, never on a listener that serves envs.
func startPprof(log zerolog.Logger) (stop func(), err error) {
	v := os.Getenv(pprofEnv)
	if v == "" {
		return func() {}, nil
	}
	network, addr, err := pprofAddr(v)
	if err != nil {
		return nil, err
	}
	ln, err := listenPprof(network, addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pprofEnv, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("pprof")
		}
	}()
	log.Warn().Str("addr", ln.Addr().String()).Msg("pprof: serving profiles (" + pprofEnv + " is set)")
	return func() {
		srv.Close()
		<-done
	}, nil
}

// pprofAddr checks $ENVGATE_PPROF: a loopback host:port (an address in
// 127.0.0.0/8 or ::1, or localhost, which means 127.0.0.1), or the
// absolute path of a Unix socket (optionally written unix:/path).
// Anything else is refused: profiles and the command line show the
// gateway's memory, configuration and secrets to whoever connects.
func pprofAddr(v string) (network, addr string, err error) {
	if path, ok := strings.CutPrefix(v, "unix:"); ok || strings.HasPrefix(v, "/") {
		if !ok {
			path = v
		}
		if !filepath.IsAbs(path) {
			return "", "", fmt.Errorf("%s=%q: a Unix socket needs an absolute path, e.g. /run/envgate/pprof.sock", pprofEnv, v)
		}
		return "unix", filepath.Clean(path), nil
	}
	host, port, err := net.SplitHostPort(v)
	if err == nil {
		if p, perr := strconv.Atoi(port); perr != nil || p < 0 || p > 65535 {
			err = fmt.Errorf("port %q", port)
		}
	}
	if err != nil {
		return "", "", fmt.Errorf("%s=%q: %v; want a loopback host:port such as 127.0.0.1:6060, or a Unix socket path", pprofEnv, v, err)
	}
	if strings.EqualFold(host, "localhost") {
		return "tcp", net.JoinHostPort("127.0.0.1", port), nil
	}
	if ip, perr := netip.ParseAddr(host); perr == nil && ip.Unmap().IsLoopback() && ip.Zone() == "" {
		return "tcp", net.JoinHostPort(ip.Unmap().String(), port), nil
	}
	return "", "", fmt.Errorf("%s=%q: profiles expose the gateway's memory, so they are served only on a loopback address (127.0.0.1:6060, [::1]:6060, localhost:6060) or a Unix socket path (/run/envgate/pprof.sock)", pprofEnv, v)
}

// listenPprof listens on a checked address. A Unix socket is made mode
// 0600 (its owner only: the gateway's user), replacing a stale socket an
// earlier run left at the path, never another kind of file.
func listenPprof(network, addr string) (net.Listener, error) {
	if network != "unix" {
		return net.Listen(network, addr)
	}
	if st, err := os.Lstat(addr); err == nil {
		if st.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", addr)
		}
		if err := os.Remove(addr); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("unix", addr)
	if err != nil {
		return nil, err
	}
	// Connecting needs write permission, which the umask already keeps
	// from group and others; 0600 says so outright. (Not through umask:
	// it is the process's, shared by every goroutine creating files.)
	if err := os.Chmod(addr, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}
