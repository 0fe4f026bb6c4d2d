package gateway_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/envgate/envgate/netns/netnstest/wait"
)

// dialWS opens the demo's echo WebSocket on env through the gateway.
func (g *gw) dialWS(t *testing.T, ctx context.Context, env string) (*websocket.Conn, *http.Response) {
	t.Helper()
	// coder/websocket wants a client without Timeout: the connection
	// outlives any one request.
	hc := *g.Client
	hc.Timeout = 0
	c, resp, err := websocket.Dial(ctx, "ws://"+env+".localhost/ws", &websocket.DialOptions{HTTPClient: &hc})
	if err != nil {
		t.Fatalf("dial %s: %v", env, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c, resp
}

func echo(t *testing.T, ctx context.Context, c *websocket.Conn, msg string) {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	typ, got, err := c.Read(ctx)
	if err != nil || typ != websocket.MessageText || string(got) != msg {
		t.Fatalf("echo of %q: %v %q %v", msg, typ, got, err)
	}
}

// TestWebSocketColdWarmAndSilent: an upgrade that is an env's very first
// request waits for the start and then upgrades; a second finds the env
// warm; and a connection that carries nothing at all lives on.
//
// "Lives for minutes" is proved by configuration rather than by waiting
// minutes: every timeout that could end a silent connection is set to
// 300 ms here — the env's idle timeout (the reaper, checking every 50 ms),
// the server's ReadHeaderTimeout and IdleTimeout — and the connections are
// held silent until each of them has been seen to fire on a control that
// went silent after they did: a connection that never sends a request
// (ReadHeaderTimeout), one that stays open after its request (IdleTimeout),
// and a second env that nobody uses (the reaper). The gateway has no other
// timeout that applies to an upgraded connection: no
// ReadTimeout/WriteTimeout on its server, and the transport's dial,
// Expect-Continue and idle-pool timeouts end before the 101 or concern
// pooled connections only, which an upgraded one never returns to.
func TestWebSocketColdWarmAndSilent(t *testing.T) {
	const short = 300 * time.Millisecond
	g := startGateway(t, gwOptions{
		Templates:    []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{Idle: short})},
		ReapInterval: 50 * time.Millisecond,
		Server: func(s *http.Server) {
			s.ReadHeaderTimeout = short
			s.IdleTimeout = short
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cold, resp := g.dialWS(t, ctx, "ws-env")
	if resp.Header.Get(gateway.ColdStartHeader) == "" {
		t.Error("the upgrade that started the env lacks " + gateway.ColdStartHeader)
	}
	echo(t, ctx, cold, "first")
	warm, resp := g.dialWS(t, ctx, "ws-env")
	if v := resp.Header.Get(gateway.ColdStartHeader); v != "" {
		t.Errorf("warm upgrade carries %s: %s", gateway.ColdStartHeader, v)
	}
	echo(t, ctx, warm, "second")

	// Silence, until the controls show that every timeout has fired.
	silent := time.Now()
	idle := dialControl(t, g.Addr)
	if _, err := idle.Write([]byte("GET /healthz HTTP/1.1\r\nHost: ws-control.localhost\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("control request: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("control request: %s, close %v; want 200 on a kept-alive connection", resp.Status, resp.Close)
	}
	header := dialControl(t, g.Addr)
	waitClosed(t, header, "a connection that sent no request (ReadHeaderTimeout)")
	waitClosed(t, br, "a kept-alive connection after its request (IdleTimeout)")
	wait.For(t, 30*time.Second, "the reaper to stop the unused env", func() bool {
		for _, in := range g.Envs.List() {
			if in.Name == "ws-control" && in.State != lifecycle.Stopped {
				return false
			}
		}
		return true
	})
	for _, in := range g.Envs.List() {
		if in.Name == "ws-env" && in.State != lifecycle.Ready {
			t.Fatalf("ws-env %v under open WebSockets, after the reaper stopped an unused env", in.State)
		}
	}
	t.Logf("WebSockets silent for %v", time.Since(silent).Round(time.Millisecond))
	echo(t, ctx, cold, "after the silence")
	echo(t, ctx, warm, "after the silence, too")
	if n := g.Net.Creates.Load(); n != 2 {
		t.Fatalf("%d namespaces created, want 2 (ws-env and the unused env): the env was reaped under open WebSockets", n)
	}
}

// dialControl opens a plain connection to the gateway, closed when the
// test ends.
func dialControl(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitClosed reads from r until the gateway closes the connection; more
// bytes, or nothing within 30s, fail the test.
func waitClosed(t *testing.T, r io.Reader, what string) {
	t.Helper()
	got := make(chan error, 1)
	go func() {
		n, err := r.Read(make([]byte, 1))
		if n > 0 {
			err = errors.New("got bytes instead")
		}
		got <- err
	}()
	select {
	case err := <-got:
		if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("%s: %v, want the gateway to close it", what, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s still open after 30s", what)
	}
}

// TestWebSocketGoingAwayAtShutdown: at shutdown an open WebSocket keeps
// working through the grace period, then the gateway (not the env, which
// is still running) closes it with 1001 "going away".
func TestWebSocketGoingAwayAtShutdown(t *testing.T) {
	const drain = time.Second
	g := startGateway(t, gwOptions{Drain: drain})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, _ := g.dialWS(t, ctx, "ws-bye")
	echo(t, ctx, c, "hello")

	began := time.Now()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		g.Stop()
	}()
	// Shutdown has begun once the listener refuses connections.
	wait.For(t, 10*time.Second, "the listener to refuse connections", func() bool {
		conn, err := net.DialTimeout("tcp", g.Addr, time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	})
	echo(t, ctx, c, "during the grace period")

	_, _, err := c.Read(ctx)
	waited := time.Since(began)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway || ce.Reason != "gateway shutting down" {
		t.Fatalf("read after shutdown: %v, want close 1001 from the gateway", err)
	}
	if waited < drain*9/10 {
		t.Errorf("closed after %s, before the %s grace was over", waited, drain)
	}
	<-stopped
	if infos := g.Envs.List(); len(infos) != 1 || infos[0].State != lifecycle.Ready {
		t.Errorf("env after the gateway's shutdown: %+v, want still ready", infos)
	}
}
