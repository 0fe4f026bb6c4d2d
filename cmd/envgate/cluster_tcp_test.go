package main

import (
	"bufio"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/certs/certstest"
	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/lifecycle/cluster"
	"github.com/envgate/envgate/lifecycle/cluster/clustertest"
	"github.com/envgate/envgate/netns/netnstest"
	"github.com/envgate/envgate/netns/netnstest/wait"
)

// tcpNode is a cluster node's HTTPS and tcp: listeners' addresses.
type tcpNode struct {
	https, terminate, passthrough string
}

// TestClusterTCP: a connection to a tcp: listener (TLS routed by SNI) of
// a node that does not own its env is relayed to the owner, as HTTP
// requests are: a cold env nobody owns is placed (rendezvous) on the
// other node and started there alone; the client gets that env's bytes,
// in terminate mode (the gateway's TLS, the demo server's page) and in
// passthrough mode (the ClientHello replayed to the env's own TLS
// server). A TCP hop is opened only by a node: one signed with another
// secret, or an HTTP hop's signature, is refused; and a hop is never
// forwarded again.
func TestClusterTCP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	// The env's own TLS server (passthrough): openssl's, with -WWW serving
	// the env's name from its data dir.
	ca := certstest.NewCA(t)
	certPEM, keyPEM, _ := ca.Leaf(t, "*.localhost", "tls--*.localhost")
	keys := t.TempDir()
	certFile, keyFile := filepath.Join(keys, "env.crt"), filepath.Join(keys, "env.key")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	envRoots := x509.NewCertPool()
	envRoots.AppendCertsFromPEM(ca.PEM())

	te := clustertest.Start(t)
	cli := te.Client(t)
	tcps := map[string]tcpNode{}
	nodes := startTestClusterWith(t, []string{te.Endpoint}, "ttcp", 2, 5*time.Second, func(c *clusterNode) string {
		n := tcpNode{fmt.Sprintf("127.0.0.1:%d", netnstest.LoopbackPort(t)), fmt.Sprintf("127.0.0.1:%d", netnstest.LoopbackPort(t)), fmt.Sprintf("127.0.0.1:%d", netnstest.LoopbackPort(t))}
		tcps[c.name] = n
		return fmt.Sprintf(`domains: [localhost]
listen: {http: %q, https: %q}
tls: {mode: internal}
tcp:
  - {listen: %q, port: web}
  - {listen: %q, port: tls, tls: passthrough}
templates:
  - name: demo
    match: "*"
    command: ["/bin/sh", "-c", "cd {{.DataDir}} && echo {{.Name}} > tls-name && openssl s_server -quiet -accept {{.Ports.tls}} -cert %s -key %s -WWW & exec {{.Self}} demo-server --listen :{{.Port}} --name {{.Name}} --data-dir {{.DataDir}}"]
    ports: {web: 3000, tls: 5433}
    default_port: web
    ready: {http: /healthz, timeout: 30s}
    allow_root: true
`, c.addr, n.https, n.terminate, n.passthrough, certFile, keyFile)
	})
	via, owner := nodes[0], nodes[1]
	gwRoots := x509.NewCertPool()
	rootPEM, err := os.ReadFile(filepath.Join(via.state, "ca", "root.pem"))
	if err != nil || !gwRoots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("the cluster's internal CA root: %v", err)
	}

	// An env that rendezvous places on the owner, not on the node the
	// client reaches.
	members := []cluster.Member{{Node: via.name}, {Node: owner.name}}
	env := ""
	for i := 0; env == ""; i++ {
		if m, _ := cluster.Choose(fmt.Sprintf("tcp%d", i), members); m.Node == owner.name {
			env = fmt.Sprintf("tcp%d", i)
		}
	}
	onlyOnOwner := func(when string) {
		t.Helper()
		if n, _ := ownerKey(t, cli, "ttcp", env); n != owner.name {
			t.Errorf("%s: %s's owner key names %q, want %s", when, env, n, owner.name)
		}
		if ns, _ := instanceState(t, via.instance); len(ns) != 0 {
			t.Errorf("%s: %s runs %v; %s is %s's", when, via.name, ns, env, owner.name)
		}
		if ns, _ := instanceState(t, owner.instance); len(ns) != 1 {
			t.Errorf("%s: %s runs %v, want %s alone", when, owner.name, ns, env)
		}
	}

	// Terminate mode, cold, through the node that does not own the env:
	// the demo server's page of env, started on the owner alone.
	url := "https://" + env + ".localhost/"
	for i, node := range []*clusterNode{via, via, owner} {
		resp, body := getBody(t, tlsClient(t, tcps[node.name].terminate, gwRoots), url)
		if resp.StatusCode != 200 || !strings.Contains(body, "<h1>"+env+"</h1>") || resp.Header.Get("X-Demo-Visits") != fmt.Sprint(i+1) {
			t.Fatalf("connection %d via %s (terminate): %s, visit %q; want %s's page, visit %d:\n%s", i+1, node.name, resp.Status, resp.Header.Get("X-Demo-Visits"), env, i+1, body)
		}
	}
	onlyOnOwner("after terminate")
	// With TLS on, the nodes' plain HTTP listeners redirect clients to
	// https, but not hops: an HTTPS request through the other node is
	// forwarded to the owner, and answered there.
	if resp, body := getBody(t, tlsClient(t, tcps[via.name].https, gwRoots), url); resp.StatusCode != 200 ||
		!strings.Contains(body, "<h1>"+env+"</h1>") || resp.Header.Get("X-Demo-Visits") != "4" {
		t.Fatalf("HTTPS via %s: %s, visit %q; want %s's page, visit 4:\n%s", via.name, resp.Status, resp.Header.Get("X-Demo-Visits"), env, body)
	}

	// Passthrough: the ClientHello the node read for the SNI is replayed
	// to the owner and on to the env's TLS server. Its port is not the
	// readiness probe's: retry until openssl listens.
	pt := tlsClient(t, tcps[via.name].passthrough, envRoots)
	var body string
	if !wait.Until(30*time.Second, func() bool {
		resp, err := pt.Get("https://tls--" + env + ".localhost/tls-name")
		if err != nil {
			body = err.Error()
			return false
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		return err == nil && resp.StatusCode == 200
	}) {
		t.Fatalf("passthrough via %s: %s", via.name, body)
	}
	if body != env+"\n" {
		t.Fatalf("passthrough via %s: want %s's name from its TLS server, got %q", via.name, env, body)
	}
	onlyOnOwner("after passthrough")

	// TCP hops straight to a node's HTTP address. It returns the status
	// and the answer's body or, after a 101, what the env's web port
	// answers to a GET.
	hop := func(to *clusterNode, req *http.Request) (int, string) {
		t.Helper()
		c, err := net.DialTimeout("tcp", to.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if err := req.Write(c); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body := resp.Body
		if resp.StatusCode == http.StatusSwitchingProtocols {
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+env+".localhost\r\nConnection: close\r\n\r\n")
			body = io.NopCloser(br)
		}
		b, _ := io.ReadAll(body)
		return resp.StatusCode, string(b)
	}
	signed := func(secret string, to *clusterNode) *http.Request {
		return gateway.TCPHopRequest([]byte(secret), via.name, to.addr, env+".localhost", "web", time.Now())
	}
	if status, got := hop(owner, signed(testClusterSecret, owner)); status != http.StatusSwitchingProtocols || !strings.Contains(got, "<h1>"+env+"</h1>") {
		t.Errorf("a TCP hop signed with the cluster's secret: status %d, want 101 and %s's page:\n%s", status, env, got)
	}
	if status, body := hop(owner, signed("not-the-cluster-secret-000", owner)); status != http.StatusForbidden {
		t.Errorf("a TCP hop signed with another secret: status %d, want 403\n%s", status, body)
	}
	// An HTTP hop's signature, on a request that asks for a TCP hop.
	httpHop := signed(testClusterSecret, owner)
	gateway.SignHop([]byte(testClusterSecret), via.name, time.Now(), true, httpHop)
	if status, body := hop(owner, httpHop); status != http.StatusForbidden {
		t.Errorf("a TCP hop with an HTTP hop's signature: status %d, want 403\n%s", status, body)
	}
	// A hop reaching a node that does not own the env is not sent on.
	if status, body := hop(via, signed(testClusterSecret, via)); status != http.StatusServiceUnavailable {
		t.Errorf("a TCP hop to %s, which does not own %s: status %d, want 503\n%s", via.name, env, status, body)
	}
	if n := owner.g.log.Count("tcp hop refused"); n != 2 {
		t.Errorf("%s logged %d refused TCP hops, want 2", owner.name, n)
	}
	onlyOnOwner("after the hops")
}
