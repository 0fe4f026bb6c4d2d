package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/certs/pebbletest"
	"github.com/envgate/envgate/netns/netnstest"
)

// The tests here run the real envgate binary (envgateBinary, built once
// per test run) as the gateway, with TLS on.

// tlsPoolBlock is this package's block of test addresses (10.214.80.0/20).
const tlsPoolBlock = 5

// tlsSetup is one test gateway's config: its own instance, state dir
// and loopback ports. tls is the body of the tls: section.
type tlsSetup struct {
	instance  string
	stateDir  string
	domains   []string
	httpPort  int
	httpsPort int
	match     string   // the template's match; default "*"
	source    string   // the source: section's value (flow style); default none (kind any)
	access    string   // the access: section's value (flow style); default loopback to every env off localhost
	tls       []string // lines under tls:, without indentation
	cfgPath   string
}

// newTLSSetup gives a test a fresh instance (leak-checked when the test
// ends), state dir and ports.
func newTLSSetup(t *testing.T, domains ...string) *tlsSetup {
	t.Helper()
	return &tlsSetup{
		instance:  netnstest.Prefix(t),
		stateDir:  t.TempDir(),
		domains:   domains,
		httpPort:  netnstest.LoopbackPort(t),
		httpsPort: netnstest.LoopbackPort(t),
		match:     "*",
	}
}

func (s *tlsSetup) httpAddr() string  { return fmt.Sprintf("127.0.0.1:%d", s.httpPort) }
func (s *tlsSetup) httpsAddr() string { return fmt.Sprintf("127.0.0.1:%d", s.httpsPort) }

// write writes the YAML config (once; later calls rewrite it) and returns
// its path.
func (s *tlsSetup) write(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "instance: %s\n", s.instance)
	fmt.Fprintf(&b, "domains: [%s]\n", strings.Join(s.domains, ", "))
	if s.access != "" {
		fmt.Fprintf(&b, "access: %s\n", s.access)
	} else if !slices.ContainsFunc(s.domains, func(d string) bool { return d == "localhost" }) {
		// Envs under other domains are closed to everyone by default.
		b.WriteString("access: [{allow_cidrs: [127.0.0.0/8, \"::1/128\"]}]\n")
	}
	fmt.Fprintf(&b, "listen:\n  http: %q\n  https: %q\n", s.httpAddr(), s.httpsAddr())
	fmt.Fprintf(&b, "state_dir: %s\n", s.stateDir)
	fmt.Fprintf(&b, "network:\n  pool: %s\n", netnstest.Pool(tlsPoolBlock))
	fmt.Fprintf(&b, "shutdown_timeout: 5s\n")
	if s.source != "" {
		fmt.Fprintf(&b, "source: %s\n", s.source)
	}
	b.WriteString("tls:\n")
	for _, l := range s.tls {
		b.WriteString("  " + l + "\n")
	}
	fmt.Fprintf(&b, `templates:
  - name: demo
    match: %q
    command: ["{{.Self}}", "demo-server", "--listen", ":{{.Port}}", "--name", "{{.Name}}", "--data-dir", "{{.DataDir}}"]
    allow_root: true
    port: 3000
    ready: {http: /healthz, timeout: 30s}
    stop_grace: 2s
`, s.match)
	if s.cfgPath == "" {
		s.cfgPath = filepath.Join(t.TempDir(), "envgate.yaml")
	}
	if err := os.WriteFile(s.cfgPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return s.cfgPath
}

// tlsGateway is one running `envgate serve`.
type tlsGateway struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    *pebbletest.Buffer
	once   sync.Once
}

// startTLSGateway runs `envgate serve` with s's config and waits until both
// listeners accept connections. It is stopped (SIGTERM) when the test ends
// if the test has not stopped it.
func startTLSGateway(t *testing.T, s *tlsSetup) *tlsGateway {
	t.Helper()
	netnstest.RequireRoot(t)
	cfg := s.write(t)
	g := &tlsGateway{log: &pebbletest.Buffer{}, exited: make(chan struct{})}
	g.cmd = exec.Command(envgateBinary(t), "--config", cfg, "--log-format", "json", "--log-level", "debug", "serve")
	var out io.Writer = g.log
	if os.Getenv("ENVGATE_TEST_LOG") != "" { // to watch a run: ENVGATE_TEST_LOG=1 go test -v
		out = io.MultiWriter(g.log, os.Stderr)
	}
	g.cmd.Stdout, g.cmd.Stderr = out, out
	g.cmd.WaitDelay = 5 * time.Second
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.cmd.Wait(); close(g.exited) }()
	t.Cleanup(func() {
		g.stop(t)
		if t.Failed() {
			t.Logf("gateway log (pid %d):\n%s", g.cmd.Process.Pid, g.log.String())
		}
	})
	pebbletest.WaitListening(t, s.httpsAddr(), g.exited)
	pebbletest.WaitListening(t, s.httpAddr(), g.exited)
	return g
}

// stop sends SIGTERM and waits for a clean exit: envs stopped, namespaces
// removed, exit status 0. Calling it again does nothing.
func (g *tlsGateway) stop(t *testing.T) {
	t.Helper()
	g.once.Do(func() {
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.exited:
		case <-time.After(90 * time.Second):
			_ = g.cmd.Process.Kill()
			<-g.exited
			t.Errorf("gateway did not exit within 90s of SIGTERM")
			return
		}
		if code := g.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("gateway exited with status %d after SIGTERM", code)
		}
	})
}

// tlsClient returns an HTTP client that sends every request to addr,
// whatever the URL's host, verifying the server against roots, with
// HTTP/2 allowed and redirects not followed.
func tlsClient(t *testing.T, addr string, roots *x509.CertPool) *http.Client {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       2 * time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// get fetches url through c and returns the response with its body read.
func getBody(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp, string(body)
}

// handshake dials addr with SNI name, verifying against roots, and returns
// the served leaf.
func tlsHandshake(ctx context.Context, addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &tls.Dialer{Config: &tls.Config{ServerName: name, RootCAs: roots, NextProtos: []string{"h2"}}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}
