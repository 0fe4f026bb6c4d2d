package main

import (
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// pprofEnv names the environment variable that, set to an address such as
// 127.0.0.1:6060, makes `envgate serve` serve net/http/pprof there. It is
// off by default: profiles reveal internals and cost CPU while taken. The
// benchmark script (loadtest/bench/run.sh) uses it to profile the warm path.
const pprofEnv = "ENVGATE_PPROF"

// startPprof starts the profiling server when $ENVGATE_PPROF is set and
// returns the function that stops it. The handlers live on a mux of their
// own, never on a listener that serves envs.
func startPprof(log zerolog.Logger) func() {
	addr := os.Getenv(pprofEnv)
	if addr == "" {
		return func() {}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Error().Err(err).Str("addr", addr).Msg("pprof: not serving")
		return func() {}
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
	}
}
