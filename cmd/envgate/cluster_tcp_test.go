package main

import (
	"bufio"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
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
// requests are. Three nodes: a cold env nobody owns is placed
// (rendezvous) on one of them and started there alone, and connections
// through every node, in terminate mode (the gateway's TLS, the demo
// server's page) and in passthrough mode (the ClientHello replayed to
// the env's own TLS server), reach that one start of the env: each
// start names itself with a token of its own (boot), and every
// connection shows the same one. A TCP hop is opened only by a node: one
// signed with another secret, or an HTTP hop's signature, is refused;
// and a hop is never forwarded again. When the owner dies, a connection
// relayed to it while its session lasts fails at once, with a warning
// naming the node, and once its session is gone the env starts again on
// one other node, with its data dir. When the next owner freezes, a
// connection relayed to it is held until its session ends, then closed;
// the env moves again, and the thawed node stops its copy.
func TestClusterTCP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	// The env's own TLS server (passthrough): openssl's, with -WWW
	// serving the file boot from the env's private /tmp: the env's name
	// and a token of this start. The demo server shows the same token
	// after the env's name.
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
	// A session_ttl long enough that the owner's outlives the check of a
	// connection relayed to it once it is dead, on a loaded machine.
	const ttl = 10 * time.Second
	nodes := startTestClusterWith(t, []string{te.Endpoint}, "ttcp", 3, ttl, func(c *clusterNode) string {
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
    command: ["/bin/sh", "-c", "boot=$(cat /proc/sys/kernel/random/uuid) && mkdir -p /tmp/www && echo {{.Name}}.$boot > /tmp/www/boot || exit 1; cd /tmp/www && openssl s_server -quiet -accept {{.Ports.tls}} -cert %s -key %s -WWW & exec {{.Self}} demo-server --listen :{{.Port}} --name {{.Name}}.$boot --data-dir {{.DataDir}}"]
    ports: {web: 3000, tls: 5433}
    default_port: web
    ready: {http: /healthz, timeout: 30s}
    allow_root: true
`, c.addr, n.https, n.terminate, n.passthrough, certFile, keyFile)
	})
	owner := nodes[2]
	gwRoots := x509.NewCertPool()
	rootPEM, err := os.ReadFile(filepath.Join(owner.state, "ca", "root.pem"))
	if err != nil || !gwRoots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("the cluster's internal CA root: %v", err)
	}

	// An env that rendezvous places on the owner, not on the node the
	// client reaches first.
	var members []cluster.Member
	for _, c := range nodes {
		members = append(members, cluster.Member{Node: c.name})
	}
	env := ""
	for i := 0; env == ""; i++ {
		if m, _ := cluster.Choose(fmt.Sprintf("tcp%d", i), members); m.Node == owner.name {
			env = fmt.Sprintf("tcp%d", i)
		}
	}
	// onlyOn checks that env runs on node alone, among live: its owner
	// key names node, node runs its namespace, and no other node of
	// live runs any.
	onlyOn := func(when string, node *clusterNode, live []*clusterNode) {
		t.Helper()
		if n, _ := ownerKey(t, cli, "ttcp", env); n != node.name {
			t.Errorf("%s: %s's owner key names %q, want %s", when, env, n, node.name)
		}
		for _, c := range live {
			ns, _ := instanceState(t, c.instance)
			if want := c.instance + "-" + env; c == node && !slices.Equal(ns, []string{want}) {
				t.Errorf("%s: %s runs %v, want %s alone", when, c.name, ns, want)
			} else if c != node && len(ns) != 0 {
				t.Errorf("%s: %s runs %v; %s is %s's", when, c.name, ns, env, node.name)
			}
		}
	}

	// terminate asks for env's page through node's terminate listener,
	// on a connection of its own, and returns the start token the page
	// names and the visit count kept in the data dir.
	url := "https://" + env + ".localhost/"
	terminate := func(node *clusterNode) (boot string, visits int) {
		t.Helper()
		resp, body := getBody(t, tlsClient(t, tcps[node.name].terminate, gwRoots), url)
		m := demoEnvRE.FindStringSubmatch(body)
		if resp.StatusCode != 200 || m == nil || !strings.HasPrefix(m[1], env+".") {
			t.Fatalf("via %s (terminate): %s, want %s's page:\n%s", node.name, resp.Status, env, body)
		}
		visits, _ = strconv.Atoi(resp.Header.Get("X-Demo-Visits"))
		return strings.TrimPrefix(m[1], env+"."), visits
	}
	// terminateOK is terminate for a poll: "" when the connection fails
	// or the answer is not env's page.
	terminateOK := func(node *clusterNode) (boot string, visits int) {
		c := tlsClient(t, tcps[node.name].terminate, gwRoots)
		c.Timeout = 30 * time.Second
		resp, err := c.Get(url)
		if err != nil {
			return "", 0
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		m := demoEnvRE.FindStringSubmatch(string(body))
		if err != nil || resp.StatusCode != 200 || m == nil || !strings.HasPrefix(m[1], env+".") {
			return "", 0
		}
		visits, _ = strconv.Atoi(resp.Header.Get("X-Demo-Visits"))
		return strings.TrimPrefix(m[1], env+"."), visits
	}
	// passthrough fetches the boot file from env's own TLS server through
	// node's passthrough listener. Its port is not the readiness probe's:
	// it retries until openssl listens.
	passthrough := func(node *clusterNode) (boot string) {
		t.Helper()
		var body string
		if !wait.Until(30*time.Second, func() bool {
			resp, err := tlsClient(t, tcps[node.name].passthrough, envRoots).Get("https://tls--" + env + ".localhost/boot")
			if err != nil {
				body = err.Error()
				return false
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			body = string(b)
			return err == nil && resp.StatusCode == 200
		}) {
			t.Fatalf("passthrough via %s: %s", node.name, body)
		}
		if !strings.HasPrefix(body, env+".") {
			t.Fatalf("passthrough via %s: want %s's boot file from its TLS server, got %q", node.name, env, body)
		}
		return strings.TrimSpace(strings.TrimPrefix(body, env+"."))
	}

	// Cold, through a node that does not own the env, then through every
	// node in both modes: one start of the env, on the owner alone.
	boot, _ := terminate(nodes[0])
	if boot == "" {
		t.Fatalf("%s's page names no start token", env)
	}
	for i, node := range nodes {
		if b, visits := terminate(node); b != boot || visits != i+2 {
			t.Errorf("via %s (terminate): start %q, visit %d; want start %q, visit %d", node.name, b, visits, boot, i+2)
		}
		if b := passthrough(node); b != boot {
			t.Errorf("via %s (passthrough): start %q; want %q, the one every connection reached", node.name, b, boot)
		}
	}
	onlyOn("after connections through every node", owner, nodes)
	// With TLS on, the nodes' plain HTTP listeners redirect clients to
	// https, but not hops: an HTTPS request through another node is
	// forwarded to the owner, and answered there.
	if resp, body := getBody(t, tlsClient(t, tcps[nodes[0].name].https, gwRoots), url); resp.StatusCode != 200 ||
		!strings.Contains(body, "<h1>"+env+"."+boot+"</h1>") || resp.Header.Get("X-Demo-Visits") != "5" {
		t.Fatalf("HTTPS via %s: %s, visit %q; want %s's page, visit 5:\n%s", nodes[0].name, resp.Status, resp.Header.Get("X-Demo-Visits"), env, body)
	}

	// TCP hops straight to a node's HTTP address. It returns the status
	// and the answer's body or, after a 101, what the env's web port
	// answers to a GET.
	via := nodes[0]
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
	if status, got := hop(owner, signed(testClusterSecret, owner)); status != http.StatusSwitchingProtocols || !strings.Contains(got, "<h1>"+env+"."+boot+"</h1>") {
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
	onlyOn("after the hops", owner, nodes)

	// The owner dies. The killed gateway leaves its namespace and dev
	// server behind, as a crashed one would: `envgate gc` removes them
	// (before the leak check that netnstest.Prefix registered first).
	t.Cleanup(func() {
		out, err := exec.Command(envgateBinary(t), "gc", "--config", owner.cfgPath).CombinedOutput()
		if err != nil {
			t.Errorf("envgate gc for the killed node: %v\n%s", err, out)
		}
	})
	killed := time.Now()
	owner.g.cmd.Process.Signal(syscall.SIGKILL)
	<-owner.g.done
	live := nodes[:2]
	// While its session lasts, the others still place the env there: a
	// connection relayed to it ends at once (no answer from the dead
	// node, so none for the client), and the relaying node says why.
	c := tlsClient(t, tcps[via.name].terminate, gwRoots)
	c.Timeout = 30 * time.Second
	if resp, err := c.Get(url); err == nil {
		resp.Body.Close()
		t.Errorf("via %s to the dead %s: %s, want the connection closed", via.name, owner.name, resp.Status)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("via %s to the dead %s: %v, want the connection closed at once", via.name, owner.name, err)
	}
	if n, _ := ownerKey(t, cli, "ttcp", env); n != owner.name {
		t.Fatalf("%s's owner key names %q %v after the kill, want the killed %s still (its session_ttl is %v)", env, n, time.Since(killed), owner.name, ttl)
	}
	// The gateway's log reaches the test through a pipe, after the
	// connection's end.
	logged := func(node *clusterNode, what, line string) {
		t.Helper()
		wait.For(t, 10*time.Second, node.name+" to log "+what, func() bool { return node.g.log.Count(line) > 0 })
		if n := node.g.log.Count(line); n != 1 {
			t.Errorf("%s logged %s %d times, want once", node.name, what, n)
		}
	}
	logged(via, "an unreachable owner", "tcp: the env's node is unreachable")
	// Then the env comes back on one of the others, from its data dir: a
	// new start (a new token), the same one through both nodes.
	bound := ttl + 30*time.Second // session_ttl, a cold start, and slack for a loaded machine
	var moved string
	var visits int
	if !wait.Until(time.Until(killed.Add(bound)), func() bool {
		b, _ := terminateOK(live[1])
		return b != ""
	}) {
		t.Fatalf("%s not answering through %s %v after the kill", env, live[1].name, bound)
	}
	t.Logf("%s answered through %s %v after its owner's kill", env, live[1].name, time.Since(killed).Round(time.Millisecond))
	moved, visits = terminate(live[0])
	if moved == boot {
		t.Errorf("after the kill, %s still shows the killed node's start %q", env, boot)
	}
	// Visits: 5 before the kill (four terminate, one HTTPS), the 101 hop,
	// the first answer after the move and this one; a failed connection
	// never reached the env.
	if visits != 8 {
		t.Errorf("after the move, %s counted visit %d, want 8 (its data dir's count went on)", env, visits)
	}
	for _, node := range live {
		if b, _ := terminate(node); b != moved {
			t.Errorf("via %s (terminate) after the move: start %q, want %q", node.name, b, moved)
		}
		if b := passthrough(node); b != moved {
			t.Errorf("via %s (passthrough) after the move: start %q, want %q", node.name, b, moved)
		}
	}
	newOwner, relay := live[0], live[1]
	if n, _ := ownerKey(t, cli, "ttcp", env); n == live[1].name {
		newOwner, relay = live[1], live[0]
	}
	onlyOn("after the move", newOwner, live)

	// The new owner freezes (SIGSTOP): its kernel accepts the TCP hop,
	// and nothing answers it. The relaying node holds the client until
	// the frozen node's session ends, then closes the connection and
	// says why; the next connection starts the env on a live node, and
	// the frozen node, thawed, finds its env moved and stops its copy.
	frozen := newOwner
	t.Cleanup(func() { frozen.g.cmd.Process.Signal(syscall.SIGCONT) })
	if err := frozen.g.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	froze := time.Now()
	c = tlsClient(t, tcps[relay.name].terminate, gwRoots)
	c.Timeout = bound + ttl
	if resp, err := c.Get(url); err == nil {
		resp.Body.Close()
		t.Errorf("via %s to the frozen %s: %s, want the connection closed", relay.name, frozen.name, resp.Status)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("via %s to the frozen %s: %v, want the connection closed once its session ended", relay.name, frozen.name, err)
	}
	t.Logf("a connection through %s to the frozen %s was closed %v after the freeze", relay.name, frozen.name, time.Since(froze).Round(time.Millisecond))
	logged(relay, "a hop to a node that left the cluster", "left the cluster (its session ended) before it answered")
	var last string
	if !wait.Until(time.Until(froze.Add(bound)), func() bool {
		last, visits = terminateOK(relay)
		return last != ""
	}) {
		t.Fatalf("%s not answering through %s %v after %s froze", env, relay.name, bound, frozen.name)
	}
	if last == moved || last == boot {
		t.Errorf("after %s froze, %s shows an earlier start %q", frozen.name, env, last)
	}
	// 10 visits before the freeze (8, then one through each live node).
	if visits != 11 {
		t.Errorf("after the second move, %s counted visit %d, want 11", env, visits)
	}
	if err := frozen.g.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	wait.For(t, bound, "the thawed "+frozen.name+"'s namespaces to go", func() bool {
		ns, _ := instanceState(t, frozen.instance)
		return len(ns) == 0
	})
	if b, _ := terminate(frozen); b != last {
		t.Errorf("via the thawed %s: start %q, want %q", frozen.name, b, last)
	}
	onlyOn("after the thaw", relay, live)
}
