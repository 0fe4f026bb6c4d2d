package gateway_test

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/netns"
)

// TestProxiesThroughFirewall: with the instance's firewall on, envs
// start (the readiness probe is the gateway's own, marked connection)
// and are proxied to, over connections made inside their namespaces, and
// a local process that is not the gateway cannot connect to an env's
// address.
func TestProxiesThroughFirewall(t *testing.T) {
	g := startGateway(t, gwOptions{})
	fw, err := netns.OpenFirewall(netns.FirewallConfig{Prefix: g.NS.Prefix(), Pool: g.NS.Pool().Prefix()})
	if err != nil {
		t.Fatal(err)
	}
	// Registered after startGateway's cleanups, so it runs before them.
	t.Cleanup(func() {
		if err := fw.Close(); err != nil {
			t.Errorf("close firewall: %v", err)
		}
	})
	for _, env := range []string{"fw-a", "fw-b"} {
		resp := g.get(t, env+".localhost:8080", "/")
		body := readAll(t, resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(body, env) {
			t.Fatalf("%s: status %d, body %q: want the demo page", env, resp.StatusCode, body)
		}
		lease, err := g.Envs.Acquire(context.Background(), env)
		if err != nil {
			t.Fatal(err)
		}
		addr := lease.Addr.String()
		lease.Release()
		// The proxy dials the env from inside its namespace (the
		// connection crosses neither the veth nor the host's
		// firewall): the dev server sees it come from the env's own
		// address, on the direct path (a GET) and through
		// ReverseProxy (a body).
		for _, method := range []string{"GET", "POST"} {
			req, err := http.NewRequest(method, "http://"+env+".localhost:8080/echo", strings.NewReader("x"))
			if err != nil {
				t.Fatal(err)
			}
			if method == "GET" {
				req.Body, req.ContentLength = nil, 0
			}
			resp, err := g.Client.Do(req)
			if err != nil {
				t.Fatalf("%s %s/echo: %v", method, env, err)
			}
			e := decodeEcho(t, resp)
			resp.Body.Close()
			from, err := netip.ParseAddrPort(e.RemoteAddr)
			if err != nil || from.Addr() != lease.Addr.Addr() {
				t.Errorf("%s %s/echo: the env saw the proxy's connection from %q, want from its own address %v", method, env, e.RemoteAddr, lease.Addr.Addr())
			}
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s: an unmarked local connection to %s went through", env, addr)
		}
	}
}
