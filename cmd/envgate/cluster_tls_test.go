package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/certs/pebbletest"
	"github.com/envgate/envgate/lifecycle/cluster/clustertest"
	"github.com/envgate/envgate/loadtest/demo"
	"github.com/envgate/envgate/netns/netnstest"
	"github.com/envgate/envgate/netns/netnstest/wait"
)

// TestClusterTLSOneOrder: certificates in cluster mode (issue 16). Three
// nodes share one state dir, so one certmagic storage (state_dir/certs)
// and one ACME order ledger (state_dir/acme-orders.json). Pebble
// validates challenges on the first node's listeners only, as a CA
// reaches whichever node DNS or the load balancer picks.
//
//   - Handshakes for a new name reach all three nodes at once: each node
//     goes for the order (certmagic's lock file in the shared storage),
//     exactly one ACME order is placed (at Pebble and in the ledger), the
//     other two wait for the lock and find the certificate stored, and
//     all three serve that one certificate.
//   - A new name asked of the second node alone is ordered there, and the
//     first node answers the CA's challenge from the shared storage; the
//     first node then serves the certificate from storage, no new order.
//   - envgate destroy removes the env's certificate from the storage and
//     from every node's memory: the next handshakes get a new one.
func TestClusterTLSOneOrder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	te := clustertest.Start(t)
	both, second := "feature-both", "feature-second"
	name := both + "." + acmeDomain
	// Pebble's challenges reach the first node through a gate that opens
	// once every node has asked for the order's lock, so the three are
	// sure to contend for one order rather than come one after the other.
	open := make(chan struct{})
	var p *pebbletest.Pebble
	nodes := startTestClusterWith(t, []string{te.Endpoint}, "ttls", 3, 5*time.Second, func(c *clusterNode) string {
		c.httpsAddr = fmt.Sprintf("127.0.0.1:%d", netnstest.LoopbackPort(t))
		c.flags = []string{"--log-level", "debug"} // certmagic's lock steps
		if p == nil {
			// Pebble validates at the first node, on the ports it gets.
			p = pebbletest.Start(t, pebbletest.Options{HTTPPort: gatedForward(t, c.addr, open), TLSPort: gatedForward(t, c.httpsAddr, open)})
		}
		// Per-name ACME needs a source that lists its names; envs off
		// localhost are closed to everyone by default.
		return fmt.Sprintf(`domains: [%s]
listen: {http: %q, https: %q}
tls: {mode: acme, email: ops@envgate.test, ca: %q, ca_root: %q}
source: {kind: list, names: [%s, %s]}
access: [{allow_cidrs: [127.0.0.0/8]}]
`, acmeDomain, c.addr, c.httpsAddr, p.DirURL, p.APIRootPEM, both, second) + demoTemplate
	})
	ledger := filepath.Join(nodes[0].state, "acme-orders.json")

	// Four handshakes per node for one new name, all let go at once.
	asked, ended := make(chan bool, 1), make(chan struct{})
	t.Cleanup(func() { close(ended) })
	go func() {
		defer close(open)
		asked <- wait.Until(time.Minute, func() bool {
			select {
			case <-ended: // the test failed before the gate opened
				return true
			default:
			}
			return askedLock(nodes, name)
		})
	}()
	leaves := handshakeBurst(t, nodes, name, p.Roots)
	if !<-asked {
		t.Errorf("not every node asked for the lock of %s's order before the challenge was let through", name)
	}
	if got := p.Orders(); got != 1 {
		t.Errorf("Pebble saw %d orders for %s asked of three nodes at once, want 1", got, name)
	}
	if got := ledgerOrders(t, ledger); got != 1 {
		t.Errorf("the order ledger records %d orders, want 1", got)
	}
	oneObtained(t, nodes, name)
	// The certificate serves the env over HTTPS through every node: one
	// that does not own it forwards to the owner's plain-HTTP
	// listener (cluster.advertise), which serves the hop rather than
	// redirect it to https, and the env hears the client came by https.
	for _, c := range nodes {
		resp, body := getBody(t, tlsClient(t, c.httpsAddr, p.Roots), "https://"+name+"/echo")
		var e demo.EchoResponse
		if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &e) != nil || e.Env != both {
			t.Fatalf("https://%s/echo via %s: %s\n%s", name, c.name, resp.Status, body)
		}
		if proto := strings.Join(e.Headers["X-Forwarded-Proto"], ","); proto != "https" {
			t.Errorf("https://%s/echo via %s: the env sees X-Forwarded-Proto %q, want https", name, c.name, proto)
		}
		if !bytes.Equal(resp.TLS.PeerCertificates[0].Raw, leaves[0].Raw) {
			t.Errorf("https://%s/ via %s: certificate serial %s, want %s", name, c.name, resp.TLS.PeerCertificates[0].SerialNumber, leaves[0].SerialNumber)
		}
	}
	// The admin API of the node that does not own it asks the owner over
	// the same listener.
	owner := owners(t, te.Client(t), "ttls")[both]
	for _, c := range nodes {
		if e := lsJSON(t, c.cfgPath)[both]; e.State != "ready" || e.Node != owner {
			t.Errorf("envgate ls on %s: %s is %+v; want ready on %s", c.name, both, e, owner)
		}
	}

	// A name asked of the second node only: Pebble validates on the first,
	// which finds the challenge in the shared storage.
	name2 := second + "." + acmeDomain
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	leaf2, err := tlsHandshake(ctx, nodes[1].httpsAddr, name2, p.Roots)
	if err != nil {
		t.Fatalf("handshake for %s at %s (Pebble validates at %s): %v", name2, nodes[1].name, nodes[0].name, err)
	}
	if got := p.Orders(); got != 2 {
		t.Errorf("Pebble saw %d orders after a second name, want 2", got)
	}
	before := nodes[0].g.log.Count(`"certificate obtained"`)
	again, err := tlsHandshake(ctx, nodes[0].httpsAddr, name2, p.Roots)
	if err != nil {
		t.Fatalf("handshake for %s at %s: %v", name2, nodes[0].name, err)
	}
	if !bytes.Equal(again.Raw, leaf2.Raw) {
		t.Errorf("%s at %s: serial %s, %s obtained serial %s: not loaded from the shared storage", name2, nodes[0].name, again.SerialNumber, nodes[1].name, leaf2.SerialNumber)
	}
	if got := p.Orders(); got != 2 {
		t.Errorf("Pebble saw %d orders after %s asked for a certificate %s had stored, want 2", got, nodes[0].name, nodes[1].name)
	}
	if got := ledgerOrders(t, ledger); got != 2 {
		t.Errorf("the order ledger records %d orders, want 2", got)
	}
	if n := nodes[0].g.log.Count(`"certificate obtained"`); n != before {
		t.Errorf("%s obtained a certificate for %s, which %s had stored", nodes[0].name, name2, nodes[1].name)
	}

	// envgate destroy, through the node that does not own the env (the
	// owner destroys it), removes its certificate from the storage and
	// from both nodes' memory: the next handshakes, at both nodes at
	// once, get a new certificate from one new order.
	via := nodes[0]
	if via.name == owner {
		via = nodes[1]
	}
	if out := mustCLI(t, via.cfgPath, "destroy", both); !strings.Contains(out, "destroyed") {
		t.Fatalf("envgate destroy %s via %s: %q", both, via.name, out)
	}
	renewed := handshakeBurst(t, nodes, name, p.Roots)
	if bytes.Equal(renewed[0].Raw, leaves[0].Raw) {
		t.Errorf("%s after envgate destroy: the certificate from before (serial %s)", name, leaves[0].SerialNumber)
	}
	if got := p.Orders(); got != 3 {
		t.Errorf("Pebble saw %d orders after the destroy and a burst of handshakes, want 3", got)
	}
	if got := ledgerOrders(t, ledger); got != 3 {
		t.Errorf("the order ledger records %d orders, want 3", got)
	}
}

// TestClusterTLSWildcardOneOrder: with tls.wildcard every node manages
// the wildcard from its start, so the nodes of a cluster started together
// all go for its order at once. Pebble's ACME API reaches the nodes
// through a gate that opens only once all three have asked for the
// order's lock file in the shared storage: exactly one order (at Pebble
// and in the ledger) and one DNS-01 challenge follow, one node obtains
// the certificate, the other two find it stored after the lock, and all
// three serve it.
func TestClusterTLSWildcardOneOrder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	te := clustertest.Start(t)
	dnsSrv := pebbletest.StartDNS(t, "envgate.test")
	wildcard := "*." + acmeDomain
	open := make(chan struct{})
	var p *pebbletest.Pebble
	var dirURL string
	nodes := startTestClusterWith(t, []string{te.Endpoint}, "twild", 3, 5*time.Second, func(c *clusterNode) string {
		c.httpsAddr = fmt.Sprintf("127.0.0.1:%d", netnstest.LoopbackPort(t))
		c.flags = []string{"--log-level", "debug"} // certmagic's lock steps
		if p == nil {
			p = pebbletest.Start(t, pebbletest.Options{HTTPPort: listenPort(c.addr), TLSPort: listenPort(c.httpsAddr), DNS: dnsSrv.Addr})
			dirURL = gatedDirURL(t, p.DirURL, open)
		}
		return fmt.Sprintf(`domains: [%s]
listen: {http: %q, https: %q}
tls:
  mode: acme
  email: ops@envgate.test
  ca: %q
  ca_root: %q
  wildcard: {nameserver: %q, tsig_key_name: %q, tsig_secret: %q, resolvers: [%q], propagation_timeout: "off"}
access: [{allow_cidrs: [127.0.0.0/8]}]
`, acmeDomain, c.addr, c.httpsAddr, dirURL, p.APIRootPEM, dnsSrv.Addr, pebbletest.TSIGKey, pebbletest.TSIGSecret, dnsSrv.Addr) + demoTemplate
	})
	asked := wait.Until(time.Minute, func() bool { return askedLock(nodes, wildcard) })
	close(open)
	if !asked {
		t.Errorf("not every node asked for the lock of the %s order before the CA was let through", wildcard)
	}

	name := "feature-x." + acmeDomain
	leaves := make([]*x509.Certificate, len(nodes))
	for i, c := range nodes {
		var err error
		if !wait.Until(3*time.Minute, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			leaves[i], err = tlsHandshake(ctx, c.httpsAddr, name, p.Roots)
			return err == nil
		}) {
			t.Fatalf("%s serves no certificate for %s after 3 minutes: %v", c.name, name, err)
		}
		if !slices.Equal(leaves[i].DNSNames, []string{wildcard}) {
			t.Errorf("%s serves %s a certificate for %v, want %s", c.name, name, leaves[i].DNSNames, wildcard)
		}
		if !bytes.Equal(leaves[i].Raw, leaves[0].Raw) {
			t.Errorf("%s serves serial %s, %s serial %s: the nodes serve different certificates", c.name, leaves[i].SerialNumber, nodes[0].name, leaves[0].SerialNumber)
		}
	}
	if got := p.Orders(); got != 1 {
		t.Errorf("Pebble saw %d orders for %s managed by three nodes started together, want 1", got, wildcard)
	}
	if got := ledgerOrders(t, filepath.Join(nodes[0].state, "acme-orders.json")); got != 1 {
		t.Errorf("the order ledger records %d orders, want 1", got)
	}
	if added, _ := dnsSrv.Counts(); added != 1 {
		t.Errorf("%d DNS-01 challenge records added, want 1", added)
	}
	oneObtained(t, nodes, wildcard)
}

// TestClusterTLSStopWhileOrdering: a node stopped (SIGTERM) while it
// holds certmagic's lock for an order lets the lock go as it exits, so
// the nodes waiting for it need not wait for it to go stale (10 s) or
// race to take a stale one over; one of them orders, and both serve that
// certificate. Pebble's directory is behind a gate, so the stopped node's
// order never reaches it.
func TestClusterTLSStopWhileOrdering(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	te := clustertest.Start(t)
	env := "feature-stop"
	name := env + "." + acmeDomain
	open := make(chan struct{})
	var p *pebbletest.Pebble
	var dirURL string
	nodes := startTestClusterWith(t, []string{te.Endpoint}, "tstop", 3, 5*time.Second, func(c *clusterNode) string {
		c.httpsAddr = fmt.Sprintf("127.0.0.1:%d", netnstest.LoopbackPort(t))
		c.flags = []string{"--log-level", "debug"} // certmagic's lock steps
		if p == nil {
			// Pebble validates at the first node, which stays.
			p = pebbletest.Start(t, pebbletest.Options{HTTPPort: listenPort(c.addr), TLSPort: listenPort(c.httpsAddr)})
			dirURL = gatedDirURL(t, p.DirURL, open)
		}
		return fmt.Sprintf(`domains: [%s]
listen: {http: %q, https: %q}
tls: {mode: acme, email: ops@envgate.test, ca: %q, ca_root: %q}
source: {kind: list, names: [%s]}
access: [{allow_cidrs: [127.0.0.0/8]}]
`, acmeDomain, c.addr, c.httpsAddr, dirURL, p.APIRootPEM, env) + demoTemplate
	})
	stopped, stay := nodes[2], nodes[:2]

	// The node to stop takes the lock first; its order waits at the gate.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	go tlsHandshake(ctx, stopped.httpsAddr, name, p.Roots) // fails as the node stops
	wait.For(t, time.Minute, stopped.name+" to take the lock for "+name, func() bool {
		return logLines(stopped.g.log, `"lock acquired"`, `"identifier":"`+name+`"`) > 0
	})
	// The others ask for it and wait.
	leaves := make([]*x509.Certificate, len(stay))
	errs := make([]error, len(stay))
	var wg sync.WaitGroup
	for i, c := range stay {
		wg.Go(func() { leaves[i], errs[i] = tlsHandshake(ctx, c.httpsAddr, name, p.Roots) })
	}
	wait.For(t, time.Minute, "the other nodes to ask for the lock", func() bool { return askedLock(stay, name) })

	stopped.g.stop(t, syscall.SIGTERM)
	exited := time.Now()
	// Any lock file made before the exit would be the stopped node's.
	locks, err := filepath.Glob(filepath.Join(stopped.state, "certs", "locks", "*.lock"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range locks {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue // let go since the listing
		}
		var meta struct {
			Created time.Time `json:"created"`
		}
		if err != nil || json.Unmarshal(b, &meta) != nil {
			t.Fatalf("lock file %s: %v %q", f, err, b)
		}
		if meta.Created.Before(exited) {
			t.Errorf("lock file %s, made %s before %s exited, is still there: the others wait for it to go stale", filepath.Base(f), exited.Sub(meta.Created).Round(time.Millisecond), stopped.name)
		}
	}

	close(open)
	wg.Wait()
	for i, c := range stay {
		if errs[i] != nil {
			t.Fatalf("handshake for %s at %s: %v", name, c.name, errs[i])
		}
		if !bytes.Equal(leaves[i].Raw, leaves[0].Raw) {
			t.Errorf("%s serves serial %s, %s serial %s", c.name, leaves[i].SerialNumber, stay[0].name, leaves[0].SerialNumber)
		}
	}
	if got := p.Orders(); got != 1 {
		t.Errorf("Pebble saw %d orders, want 1 (the stopped node's never got through)", got)
	}
	oneObtained(t, stay, name)
}

// handshakeBurst makes four TLS handshakes for name at each node, all let
// go at once, and returns the leaves, which must all be the same.
func handshakeBurst(t *testing.T, nodes []*clusterNode, name string, roots *x509.CertPool) []*x509.Certificate {
	t.Helper()
	const perNode = 4
	leaves := make([]*x509.Certificate, len(nodes)*perNode)
	errs := make([]error, len(leaves))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range leaves {
		c := nodes[i%len(nodes)]
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			leaves[i], errs[i] = tlsHandshake(ctx, c.httpsAddr, name, roots)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("handshake %d for %s at %s: %v", i, name, nodes[i%len(nodes)].name, err)
		}
	}
	for i, leaf := range leaves {
		if !bytes.Equal(leaf.Raw, leaves[0].Raw) {
			t.Errorf("handshake %d for %s at %s: certificate serial %s (sha256 %x), handshake 0 at %s got serial %s (sha256 %x): the nodes serve different certificates",
				i, name, nodes[i%len(nodes)].name, leaf.SerialNumber, sha256.Sum256(leaf.Raw), nodes[0].name, leaves[0].SerialNumber, sha256.Sum256(leaves[0].Raw))
		}
	}
	return leaves
}

// ledgerOrders counts the orders recorded in the ACME order ledger at
// path, over every registered domain.
func ledgerOrders(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("order ledger: %v", err)
	}
	var lf struct {
		Orders map[string][]time.Time `json:"orders"`
	}
	if err := json.Unmarshal(b, &lf); err != nil {
		t.Fatalf("order ledger %s: %v", path, err)
	}
	n := 0
	for _, times := range lf.Orders {
		n += len(times)
	}
	return n
}

// gatedForward listens on a loopback port, which it returns, and forwards
// each connection to to once open is closed.
func gatedForward(t *testing.T, to string, open <-chan struct{}) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer in.Close()
				select {
				case <-open:
				case <-ctx.Done():
					return
				}
				out, err := (&net.Dialer{}).DialContext(ctx, "tcp", to)
				if err != nil {
					return
				}
				defer out.Close()
				defer context.AfterFunc(ctx, func() { in.Close(); out.Close() })()
				go func() {
					io.Copy(out, in)
					out.(*net.TCPConn).CloseWrite()
				}()
				io.Copy(in, out)
			})
		}
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// gatedDirURL is the ACME directory at dir reached through a gatedForward:
// a client's first request to the CA (for its directory) waits until
// open is closed; the directory names the CA's own address for the rest.
func gatedDirURL(t *testing.T, dir string, open <-chan struct{}) string {
	t.Helper()
	u, err := url.Parse(dir)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = fmt.Sprintf("127.0.0.1:%d", gatedForward(t, u.Host, open))
	return u.String()
}

// askedLock tells whether every node has logged (at debug) that it asks
// for certmagic's lock to order a certificate for identifier.
func askedLock(nodes []*clusterNode, identifier string) bool {
	for _, c := range nodes {
		if logLines(c.g.log, `"acquiring lock"`, `"identifier":"`+identifier+`"`) == 0 {
			return false
		}
	}
	return true
}

// oneObtained checks that exactly one node obtained a certificate, and
// that each other node found the one for identifier stored once it had
// certmagic's lock (logged at debug).
func oneObtained(t *testing.T, nodes []*clusterNode, identifier string) {
	t.Helper()
	obtained := 0
	for _, c := range nodes {
		n := c.g.log.Count(`"certificate obtained"`)
		stored := logLines(c.g.log, `"certificate already exists in storage"`, `"identifier":"`+identifier+`"`)
		t.Logf("%s logged %d certificate obtained, %d found it stored after the lock", c.name, n, stored)
		if n == 0 && stored == 0 {
			t.Errorf("%s neither obtained %s nor found it in the storage after waiting for the lock", c.name, identifier)
		}
		obtained += n
	}
	if obtained != 1 {
		t.Errorf("the nodes logged %d certificates obtained, want 1", obtained)
	}
}

// logLines counts the lines of log that hold every one of subs.
func logLines(log *pebbletest.Buffer, subs ...string) int {
	n := 0
	for line := range strings.Lines(log.String()) {
		if !slices.ContainsFunc(subs, func(s string) bool { return !strings.Contains(line, s) }) {
			n++
		}
	}
	return n
}
