package gateway_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/netns/netnstest/wait"
	"github.com/rs/zerolog"
)

// fakePlacer places every env on the node at addr, a live member while
// live is set.
type fakePlacer struct {
	addr string
	live atomic.Bool
}

func (f *fakePlacer) Place(context.Context, string, bool) (string, error) { return f.addr, nil }
func (f *fakePlacer) OwnerAddr(string) string                             { return f.addr }
func (f *fakePlacer) Live(addr string) bool                               { return addr == f.addr && f.live.Load() }

// noEnvs runs no env here: in these tests every env is another node's.
type noEnvs struct{ t *testing.T }

func (e noEnvs) Acquire(context.Context, string) (gateway.Lease, error) {
	e.t.Error("Acquire called on the node that relays")
	return nil, errors.New("not here")
}

// startClusterTCP serves a passthrough TCP proxy in cluster mode whose
// placer is pl, until the test ends; it returns its address and its log.
func startClusterTCP(t *testing.T, pl gateway.Placer) (string, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	addr := serveTCP(t, gateway.TCPConfig{
		Domains: []string{testDomain}, Envs: noEnvs{t}, Mode: gateway.TLSPassthrough,
		Access: loopbackAccess(t), Log: zerolog.New(logs),
		Cluster: pl, Node: "gw-a", ClusterSecret: []byte("test-cluster-secret-0123456789"),
	})
	return addr, logs
}

// handshake starts TLS with SNI env.testDomain through the proxy at
// addr and returns how it ended: the proxy relays the ClientHello, and
// nothing answers it here.
func handshake(addr, env string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return tls.Client(c, &tls.Config{ServerName: env + "." + testDomain, InsecureSkipVerify: true}).Handshake()
}

// closedAtOnce fails t unless err says the proxy closed the client's
// connection (EOF or reset), rather than the client's deadline passing.
func closedAtOnce(t *testing.T, what string, err error) {
	t.Helper()
	var ne net.Error
	switch {
	case err == nil:
		t.Errorf("%s: the handshake completed, want the connection closed", what)
	case errors.As(err, &ne) && ne.Timeout():
		t.Errorf("%s: %v, want the connection closed by the proxy", what, err)
	}
}

// TestClusterTCPOwnerUnreachable: a connection for an env of a node that
// does not answer (dead: nothing listens on its address) is closed at
// once, and the node that relays says why and names the node.
func TestClusterTCPOwnerUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	pl := &fakePlacer{addr: dead}
	pl.live.Store(true)
	addr, logs := startClusterTCP(t, pl)
	closedAtOnce(t, "to a dead node", handshake(addr, "feature-x"))
	wait.For(t, 10*time.Second, "the unreachable node in the log", func() bool {
		return strings.Contains(logs.String(), `"message":"tcp: the env's node is unreachable"`) && strings.Contains(logs.String(), `"node":"`+dead+`"`)
	})
}

// TestClusterTCPOwnerLeaves: a node that accepts the TCP hop but never
// answers it (frozen, or cut off with its connections open) holds the
// client only until its session ends: then the hop and the client's
// connection are closed, and the relaying node says why.
func TestClusterTCPOwnerLeaves(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	hops := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			hops <- c
		}
	}()
	pl := &fakePlacer{addr: ln.Addr().String()}
	pl.live.Store(true)
	addr, logs := startClusterTCP(t, pl)
	ended := make(chan error, 1)
	go func() { ended <- handshake(addr, "feature-x") }()
	var hop net.Conn
	select {
	case hop = <-hops:
	case <-time.After(30 * time.Second):
		t.Fatal("no TCP hop reached the owner")
	}
	defer hop.Close()
	// The hop request came; the owner never answers. While the owner is
	// live, the client waits (as for a cold start).
	hop.SetReadDeadline(time.Now().Add(30 * time.Second))
	req := make([]byte, 4096)
	if n, err := hop.Read(req); err != nil || !strings.Contains(string(req[:n]), "Upgrade: "+gateway.TCPHopProtocol) {
		t.Fatalf("the owner read %q, %v; want a TCP hop request", req[:n], err)
	}
	select {
	case err := <-ended:
		t.Fatalf("the client's handshake ended (%v) while its env's node was live", err)
	default:
	}
	pl.live.Store(false)
	select {
	case err := <-ended:
		closedAtOnce(t, "once the owner left", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the client's connection still open 30s after its env's node left the cluster")
	}
	if _, err := io.ReadAll(hop); err != nil {
		t.Errorf("the hop after the owner left: %v, want it closed (EOF)", err)
	}
	if !strings.Contains(logs.String(), "left the cluster") || !strings.Contains(logs.String(), `"message":"tcp: the env's node is unreachable"`) {
		t.Errorf("log lacks the node that left:\n%s", logs.String())
	}
}
