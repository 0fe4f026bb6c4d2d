package gateway

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// NewHTTPServer returns an http.Server for the gateway with the timeouts
// DESIGN.md asks for: a bound on reading headers, on header size and on
// idle keep-alive, and no blanket read/write timeout, which would cut
// WebSockets and event streams.
func NewHTTPServer(h http.Handler, lg zerolog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          newStdLogger(lg, "http"),
	}
}

// Listen opens TCP listeners for addr. A host of "localhost" means both
// loopbacks, 127.0.0.1 and ::1 (the IPv6 one is skipped with a warning
// when the machine has no IPv6).
func Listen(addr string, lg zerolog.Logger) ([]net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("gateway: listen address %q: %w", addr, err)
	}
	if !strings.EqualFold(host, "localhost") {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
		return []net.Listener{ln}, nil
	}
	ln4, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	p := ln4.Addr().(*net.TCPAddr).Port // the same port on ::1, even for :0
	ln6, err := net.Listen("tcp6", net.JoinHostPort("::1", fmt.Sprint(p)))
	if err != nil {
		lg.Warn().Err(err).Msg("no IPv6 loopback listener; serving on 127.0.0.1 only")
		return []net.Listener{ln4}, nil
	}
	return []net.Listener{ln4, ln6}, nil
}

// Serve serves srv on every listener until ctx ends, then shuts down
// gracefully: it stops accepting, lets in-flight requests finish for up to
// drain, and closes what is left.
func Serve(ctx context.Context, srv *http.Server, lns []net.Listener, drain time.Duration) error {
	errc := make(chan error, len(lns))
	var wg sync.WaitGroup
	for _, ln := range lns {
		wg.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		})
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	sctx, cancel := context.WithTimeoutCause(context.Background(), drain, errors.New("gateway: drain period over"))
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		srv.Close()
	}
	wg.Wait()
	return errors.Join(serveErr, err)
}

// newStdLogger adapts zerolog for net/http's *log.Logger fields.
func newStdLogger(lg zerolog.Logger, component string) *log.Logger {
	return log.New(stdWriter{lg.With().Str("component", component).Logger()}, "", 0)
}

type stdWriter struct{ lg zerolog.Logger }

func (w stdWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	// Refused and garbled handshakes are what scanners produce all day;
	// at warn they would drown the log.
	if strings.Contains(msg, "TLS handshake error") {
		w.lg.Debug().Msg(msg)
		return len(p), nil
	}
	w.lg.Warn().Msg(msg)
	return len(p), nil
}
