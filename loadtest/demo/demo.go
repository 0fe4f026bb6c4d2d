// Package demo is the built-in demo dev server: the program the default
// template runs inside each environment's network namespace, and the
// upstream the gateway, lifecycle and loadtest tests aim at.
//
// It serves a small page that names its environment and counts visits, plus
// endpoints that exercise what a reverse proxy must get right: WebSockets
// (/ws), server-sent events (/events), slow answers (/slow), request echo
// (/echo) and streaming bodies both ways (/download, /upload).
//
// It owns one file, DataDir/visits, so that a reaped and restarted
// environment shows its data survived. It must never reach out to anything
// but its own clients: an environment has no route to anywhere else.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// EnvNameVar is the environment variable the server reads its env name from
// when Options.Name is empty.
const EnvNameVar = "ENVGATE_ENV"

// DefaultListen is the address Run listens on when Options.Listen is empty.
const DefaultListen = ":8080"

// shutdownGrace bounds how long Run waits for in-flight requests once its
// context is cancelled; the supervisor's own SIGTERM grace should exceed it.
const shutdownGrace = 5 * time.Second

var errShutdownGrace = errors.New("demo: shutdown grace period exceeded")

// Options configures the demo server. The zero value is usable.
type Options struct {
	// Listen is the TCP address to listen on. Default ":8080".
	Listen string
	// Name is the environment name shown on the page and in the
	// X-Envgate-Env header. Default: $ENVGATE_ENV, else the first label of
	// each request's Host.
	Name string
	// DataDir holds the visit counter (file "visits"), so it survives
	// restarts. Default "": the counter lives in memory only.
	DataDir string
	// BootDelay is slept before listening, to imitate a dev server that
	// takes a while to compile. Default 0.
	BootDelay time.Duration
	// Log receives the "listening" line and the server's own events.
	// Default: discarded.
	Log io.Writer
}

// Run sleeps opts.BootDelay, listens on opts.Listen and serves until ctx is
// cancelled, then shuts down gracefully: open WebSockets are closed with
// "going away", event streams end, and ordinary requests get up to 5s to
// finish. Once listening it writes
//
//	demo-server: env=NAME listening on ADDR
//
// to opts.Log (NAME is "-" when it comes from each request's Host). Run
// returns nil when it stopped because ctx was cancelled, including during
// the boot delay.
func Run(ctx context.Context, opts Options) error {
	s, err := newServer(opts)
	if err != nil {
		return err
	}
	if opts.BootDelay > 0 {
		t := time.NewTimer(opts.BootDelay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			s.log.Info().Msg("cancelled during boot delay")
			return nil
		case <-t.C:
		}
	}
	addr := opts.Listen
	if addr == "" {
		addr = DefaultListen
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("demo: listen on %s: %w", addr, err)
	}
	return s.serve(ctx, ln, s)
}

// Handler returns the demo server's handler without a listener, for tests.
// Its event streams and WebSockets end only when their clients go.
func Handler(opts Options) (http.Handler, error) {
	return newServer(opts)
}

// httpServer builds the http.Server. It sets no ReadTimeout or WriteTimeout
// on purpose: they would cut WebSockets and event streams.
func (s *server) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          log.New(s.out, "demo-server: http: ", 0),
	}
}

// serve serves h on ln until ctx is cancelled or the listener fails. It
// may be called once per server.
func (s *server) serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := s.httpServer(h)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	fmt.Fprintf(s.out, "demo-server: env=%s listening on %s\n", s.displayName(), ln.Addr())

	var failed error
	served := false
	select {
	case err := <-serveErr:
		served = true
		failed = fmt.Errorf("demo: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
		s.log.Info().Msg("shutting down")
	}

	// WithoutCancel: the caller's ctx is already done, the grace period is
	// ours.
	sctx, cancel := context.WithTimeoutCause(context.WithoutCancel(ctx), shutdownGrace, errShutdownGrace)
	defer cancel()
	// Streams never go idle on their own, and Shutdown does not see
	// hijacked connections at all: end them first.
	s.stopStreams()
	if err := srv.Shutdown(sctx); err != nil {
		s.log.Warn().Err(context.Cause(sctx)).Msg("requests still running after grace period; closing them")
		srv.Close()
	}
	if !s.waitStreams(sctx) {
		s.log.Warn().Err(context.Cause(sctx)).Msg("websockets still open after grace period")
	}
	if !served {
		<-serveErr // http.ErrServerClosed
	}
	if failed != nil {
		return failed
	}
	s.log.Info().Msg("stopped")
	return nil
}

// beginStream registers a hijacked connection's handler so shutdown can
// wait for it; it reports false once shutdown has begun.
func (s *server) beginStream() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streamsStopped {
		return false
	}
	s.streams.Add(1)
	return true
}

func (s *server) endStream() { s.streams.Done() }

// stopStreams refuses new streams and tells running ones to end.
func (s *server) stopStreams() {
	s.mu.Lock()
	s.streamsStopped = true
	s.mu.Unlock()
	s.cancelStreams()
}

// waitStreams waits for stream handlers to return, until ctx is done. It
// must be called after stopStreams, so no Add races with the Wait.
func (s *server) waitStreams(ctx context.Context) bool {
	done := make(chan struct{})
	go func() {
		s.streams.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// syncWriter serializes writes from the logger, http.Server's ErrorLog and
// the listening line, which share one io.Writer that need not be safe for
// concurrent use.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func newLogger(w io.Writer) zerolog.Logger {
	return zerolog.New(w).With().Timestamp().Str("component", "demo-server").Logger()
}
