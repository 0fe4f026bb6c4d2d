package gateway_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/certs"
	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/netns/netnstest/wait"
	"github.com/rs/zerolog"
)

const testDomain = "dev.envgate.test"

// startTCP serves a TCP proxy for g's envs on a loopback port until the
// test ends.
func startTCP(t *testing.T, g *gw, cfg gateway.TCPConfig) string {
	t.Helper()
	cfg.Domains = []string{testDomain}
	cfg.Envs = gateway.Lifecycle{Manager: g.Envs}
	if cfg.Access == nil {
		cfg.Access = loopbackAccess(t)
	}
	cfg.Log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	return serveTCP(t, cfg)
}

// serveTCP serves a TCP proxy with cfg on a loopback port until the
// test ends, and returns its address.
func serveTCP(t *testing.T, cfg gateway.TCPConfig) string {
	t.Helper()
	p, err := gateway.NewTCPProxy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p.Shutdown(ctx)
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("tcp serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("tcp proxy still serving 30s after shutdown")
		}
	})
	return ln.Addr().String()
}

// echoOnce sends msg over a TLS connection to addr with SNI serverName,
// half-closes, and returns everything read back until EOF.
func echoOnce(t *testing.T, addr, serverName string, roots *x509.CertPool, msg string) (string, error) {
	t.Helper()
	d := &tls.Dialer{Config: &tls.Config{ServerName: serverName, RootCAs: roots}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	if err := c.(*tls.Conn).CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

func internalCA(t *testing.T) (*certs.Manager, *x509.CertPool) {
	t.Helper()
	cm, err := certs.New(certs.Config{Mode: certs.ModeInternal, Domains: []string{testDomain}, StateDir: t.TempDir()},
		nil, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cm.Close() })
	pem, err := os.ReadFile(cm.RootCertPath())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatal("internal CA root: no certificate")
	}
	return cm, roots
}

// TestTCPBySNI is the test 5: TLS with SNI db--feature-x.<domain>
// through the SNI listener to a TCP echo server in the env, which starts
// cold for it; then the other ways a TCP listener reaches a port.
func TestTCPBySNI(t *testing.T) {
	envCert, envRoots := testCert(t, "dbtls--feature-x."+testDomain, "feature-x."+testDomain)
	g := startGateway(t, gwOptions{Templates: []*lifecycle.Template{multiPortTemplate(t, envCert)}, Domains: []string{testDomain},
		Config: func(c *gateway.Config) { c.Access = loopbackAccess(t) }})
	cm, gwRoots := internalCA(t)
	terminate := startTCP(t, g, gateway.TCPConfig{Port: "db", TLS: cm.TLSConfig()})
	passthrough := startTCP(t, g, gateway.TCPConfig{Port: "dbtls", Mode: gateway.TLSPassthrough})

	t.Run("terminate, cold start, port named in SNI", func(t *testing.T) {
		got, err := echoOnce(t, terminate, "db--feature-x."+testDomain, gwRoots, "hello db\n")
		if err != nil || got != "hello db\n" {
			t.Fatalf("echo = %q, %v; want the bytes back, then EOF", got, err)
		}
		if n := g.Net.Creates.Load(); n != 1 {
			t.Fatalf("sandboxes created = %d, want 1 (a cold start)", n)
		}
	})
	t.Run("terminate, listener's port", func(t *testing.T) {
		got, err := echoOnce(t, terminate, "feature-x."+testDomain, gwRoots, strings.Repeat("x", 100000))
		if err != nil || len(got) != 100000 {
			t.Fatalf("echo = %d bytes, %v; want 100000", len(got), err)
		}
	})
	t.Run("passthrough: the env does the TLS", func(t *testing.T) {
		for _, name := range []string{"feature-x." + testDomain, "dbtls--feature-x." + testDomain} {
			got, err := echoOnce(t, passthrough, name, envRoots, "hello tls\n")
			if err != nil || got != "hello tls\n" {
				t.Fatalf("%s: echo = %q, %v", name, got, err)
			}
		}
		if n := g.Net.Creates.Load(); n != 1 {
			t.Fatalf("sandboxes created = %d, want still 1", n)
		}
	})
	t.Run("the env sees the connection come from its own address", func(t *testing.T) {
		// The listener dials the env from inside its namespace, as the
		// HTTP proxy does: not over the veth, whose host end the env
		// would see.
		got, err := echoOnce(t, terminate, "who--feature-x."+testDomain, gwRoots, "")
		if err != nil {
			t.Fatal(err)
		}
		from, err := netip.ParseAddrPort(strings.TrimSpace(got))
		if err != nil {
			t.Fatalf("who: %q: %v", got, err)
		}
		lease, err := g.Envs.Acquire(context.Background(), "feature-x")
		if err != nil {
			t.Fatal(err)
		}
		defer lease.Release()
		if from.Addr() != lease.Addr.Addr() {
			t.Errorf("the env saw the connection from %v, want from its own address %v", from, lease.Addr.Addr())
		}
	})
	t.Run("refused names", func(t *testing.T) {
		for _, name := range []string{"feature-x.example.com", "a.b." + testDomain, ""} {
			if _, err := echoOnce(t, terminate, name, gwRoots, "x"); err == nil {
				t.Errorf("SNI %q: handshake succeeded, want it refused", name)
			}
		}
		d := &tls.Dialer{Config: &tls.Config{ServerName: "other.example.com", InsecureSkipVerify: true}}
		if c, err := d.Dial("tcp", passthrough); err == nil {
			c.Close()
			t.Errorf("passthrough: handshake for a foreign name reached a server")
		}
	})
	t.Run("an open connection is activity", func(t *testing.T) {
		d := &tls.Dialer{Config: &tls.Config{ServerName: "db--feature-x." + testDomain, RootCAs: gwRoots}}
		c, err := d.Dial("tcp", terminate)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 4)
		if _, err := io.WriteString(c, "ping"); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("read %q, %v", buf, err)
		}
		if in := inflight(g, "feature-x"); in != 1 {
			t.Fatalf("in flight = %d while the connection is open, want 1", in)
		}
		c.Close()
		wait.For(t, 20*time.Second, "the lease to be released after the connection closed", func() bool { return inflight(g, "feature-x") == 0 })
	})
}

func inflight(g *gw, env string) int64 {
	for _, in := range g.Envs.List() {
		if in.Name == env {
			return in.InFlight
		}
	}
	return -1
}

// TestNamedPortsHTTP: <port>--<env> reaches a named port over HTTP, plain
// <env> the default one, and a label whose prefix is no port of the
// template is an env name of its own.
func TestNamedPortsHTTP(t *testing.T) {
	g := startFake(t, gwOptions{Domains: []string{testDomain}, Config: func(c *gateway.Config) { c.Access = loopbackAccess(t) }},
		func(name string) *fakeEnv {
			alt := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "alt port of %s", name) })
			return &fakeEnv{Ports: map[string]http.Handler{"alt": alt}, DefaultPort: "web"}
		})
	for _, tc := range []struct {
		host, env, want string
	}{
		{"alt--feature-x." + testDomain, "feature-x", "alt port of feature-x"},
		{"feature-x." + testDomain, "feature-x", "feature-x"},
		{"web--feature-x." + testDomain, "feature-x", "feature-x"},
		{"nope--feature-x." + testDomain, "nope--feature-x", "nope--feature-x"},
	} {
		resp := g.get(t, tc.host, "/")
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(b), tc.want) {
			t.Errorf("GET %s: %d %q; want 200 containing %q", tc.host, resp.StatusCode, b, tc.want)
		}
	}
	if got := g.Fake.acquired(); !slices.Equal(got, []string{"feature-x", "nope--feature-x"}) {
		t.Errorf("envs acquired: %q, want feature-x and nope--feature-x", got)
	}
}
