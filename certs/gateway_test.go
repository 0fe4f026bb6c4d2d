package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testGateway stands in for the gateway's listeners: an HTTPS server using
// the current Manager's TLSConfig and an HTTP server using its HTTPHandler.
// The Manager can be swapped to simulate a restart on the same ports.
type testGateway struct {
	mgr      atomic.Pointer[Manager]
	tlsLn    net.Listener
	httpLn   net.Listener
	tlsAddr  string
	httpAddr string
	tlsPort  int
	httpPort int

	challengesServed atomic.Int64 // HTTP-01 requests HTTPHandler answered with 200
}

func newTestGateway(t *testing.T) *testGateway {
	t.Helper()
	g := &testGateway{}
	var err error
	if g.tlsLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if g.httpLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	g.tlsAddr, g.httpAddr = g.tlsLn.Addr().String(), g.httpLn.Addr().String()
	g.tlsPort, g.httpPort = g.tlsLn.Addr().(*net.TCPAddr).Port, g.httpLn.Addr().(*net.TCPAddr).Port
	return g
}

// serve starts both servers; use must have been called.
func (g *testGateway) serve(t *testing.T) {
	t.Helper()
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s over %s", r.Host, r.Proto)
	})
	outer := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return g.mgr.Load().TLSConfig(), nil
	}}
	// Refused handshakes are the point of several tests; the gateway routes
	// these to its own log, here they would only bury the test output.
	quiet := log.New(io.Discard, "", 0)
	httpsSrv := &http.Server{Handler: page, ReadHeaderTimeout: 5 * time.Minute, ErrorLog: quiet}
	plain := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := g.mgr.Load().HTTPHandler(page)
		if !strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
			h.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		if sw.status == http.StatusOK {
			g.challengesServed.Add(1)
		}
	})
	httpSrv := &http.Server{Handler: plain, ReadHeaderTimeout: time.Minute, ErrorLog: quiet}
	errs := make(chan error, 2)
	go func() { errs <- httpsSrv.Serve(tls.NewListener(g.tlsLn, outer)) }()
	go func() { errs <- httpSrv.Serve(g.httpLn) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = httpsSrv.Shutdown(ctx)
		_ = httpSrv.Shutdown(ctx)
		for range 2 {
			if err := <-errs; !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("test server: %v", err)
			}
		}
	})
}

func (g *testGateway) use(m *Manager) { g.mgr.Store(m) }

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}
