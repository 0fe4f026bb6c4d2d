package demo

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestRunServesAndShutsDownOnCancel(t *testing.T) {
	t.Parallel()
	run := startRun(t, Options{Name: "feature-x"})
	if !strings.Contains(run.logs.String(), "demo-server: env=feature-x listening on 127.0.0.1:") {
		t.Errorf("log lacks the listening line:\n%s", run.logs)
	}
	url := "http://" + run.addr
	if resp, body := get(t, url+"/healthz", nil); resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("GET /healthz = %d %q", resp.StatusCode, body)
	}

	// Open streams must not hold shutdown: an endless event stream and a
	// WebSocket.
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	ws := dialWS(t, ctx, url)
	if err := ws.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ws.Read(ctx); err != nil {
		t.Fatal(err)
	}
	// Keep reading, as a browser does, so the client answers the server's
	// close handshake.
	wsErr := make(chan error, 1)
	go func() {
		_, _, err := ws.Read(ctx)
		wsErr <- err
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/events?interval=1h", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := bufio.NewReader(resp.Body)
	if _, err := readEvent(events); err != nil {
		t.Fatal(err)
	}

	run.cancel()
	if err := run.wait(t); err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
	if logs := run.logs.String(); strings.Contains(logs, "grace period") {
		t.Errorf("shutdown needed its whole grace period:\n%s", logs)
	}
	if err := <-wsErr; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("WebSocket after shutdown: %v, want close status going away", err)
	}
	if ev, err := readEvent(events); err == nil {
		t.Errorf("event stream after shutdown delivered %+v, want its end", ev)
	}
	if _, err := net.DialTimeout("tcp", run.addr, waitLimit); err == nil {
		t.Errorf("still accepting connections on %s after Run returned", run.addr)
	}
}

// TestRunFinishesInflightRequests checks shutdown is graceful: a request
// already being served when ctx is cancelled still gets its answer.
func TestRunFinishesInflightRequests(t *testing.T) {
	t.Parallel()
	s, err := newServer(Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	probe := newHandlerProbe(s)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	served := make(chan error, 1)
	go func() { served <- s.serve(ctx, ln, probe) }()

	type result struct {
		status int
		body   string
		err    error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/slow?ms=300")
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		got <- result{resp.StatusCode, string(body), err}
	}()
	waitFor(t, probe.entered, "the /slow handler")
	cancel()

	select {
	case r := <-got:
		if r.err != nil || r.status != http.StatusOK || r.body != "slept 300ms\n" {
			t.Errorf("in-flight /slow during shutdown = %d %q %v, want 200", r.status, r.body, r.err)
		}
	case <-time.After(waitLimit):
		t.Fatal("in-flight request never answered")
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("serve did not return")
	}
}

func TestRunBootDelay(t *testing.T) {
	t.Parallel()
	const delay = 200 * time.Millisecond
	start := time.Now()
	startRun(t, Options{BootDelay: delay})
	if took := time.Since(start); took < delay {
		t.Errorf("listening %s after start, want at least the boot delay %s", took, delay)
	}
}

func TestRunCancelDuringBootReturnsPromptly(t *testing.T) {
	t.Parallel()
	logs := newLogWatcher()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{Listen: "127.0.0.1:0", BootDelay: time.Hour, Log: logs}) }()
	time.AfterFunc(20*time.Millisecond, cancel)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run cancelled during boot: %v, want nil", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Run ignored cancel during an hour-long boot delay")
	}
	if strings.Contains(logs.String(), "listening on") {
		t.Errorf("listened despite cancel during boot:\n%s", logs)
	}
}

func TestRunListenError(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { taken.Close() })
	err = Run(context.Background(), Options{Listen: taken.Addr().String()})
	var opErr *net.OpError
	if !errors.As(err, &opErr) || !strings.Contains(err.Error(), "demo: listen on "+taken.Addr().String()) {
		t.Errorf("Run on a taken port: %v, want a wrapped listen error", err)
	}
}

func TestRunBadDataDir(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Run(context.Background(), Options{DataDir: file}); err == nil || !strings.Contains(err.Error(), "demo: create data dir") {
		t.Errorf("Run with DataDir on a file: %v, want a data dir error", err)
	}
}

// TestHTTPServerTimeouts guards the settings that keep WebSockets and
// event streams alive: no blanket read or write timeout.
func TestHTTPServerTimeouts(t *testing.T) {
	t.Parallel()
	s, err := newServer(Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := s.httpServer(s)
	if srv.ReadTimeout != 0 || srv.WriteTimeout != 0 {
		t.Errorf("ReadTimeout %s, WriteTimeout %s: would cut WebSockets and SSE", srv.ReadTimeout, srv.WriteTimeout)
	}
	if srv.ReadHeaderTimeout <= 0 || srv.IdleTimeout <= 0 || srv.MaxHeaderBytes <= 0 {
		t.Errorf("ReadHeaderTimeout %s, IdleTimeout %s, MaxHeaderBytes %d: want all set", srv.ReadHeaderTimeout, srv.IdleTimeout, srv.MaxHeaderBytes)
	}
}
