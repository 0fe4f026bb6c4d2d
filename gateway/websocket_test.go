package gateway_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
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
// the server's ReadHeaderTimeout and IdleTimeout — and the connection is
// held silent for 2 s, over six times the longest of them. The gateway has
// no other timeout that applies to an upgraded connection: no
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

	time.Sleep(2 * time.Second) // silence: see the test's comment
	echo(t, ctx, cold, "after the silence")
	echo(t, ctx, warm, "after the silence, too")
	if n := g.Net.Creates.Load(); n != 1 {
		t.Fatalf("%d namespaces created: the env was reaped under open WebSockets", n)
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
	for {
		conn, err := net.DialTimeout("tcp", g.Addr, time.Second)
		if err != nil {
			break
		}
		conn.Close()
		if time.Since(began) > 10*time.Second {
			t.Fatal("listener still accepting 10s after shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}
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
