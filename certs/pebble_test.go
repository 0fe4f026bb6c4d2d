package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// Pebble and pebble-challtestsrv run as subprocesses on loopback, built once
// per test binary from the module version pinned in go.mod (tool deps).
var (
	toolsDir      string // set by TestMain
	buildOnce     sync.Once
	buildErr      error
	pebbleModDir  string
	pebbleModOnce sync.Once
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "envgate-certs-tools-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	toolsDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func buildPebble(t *testing.T) {
	t.Helper()
	buildOnce.Do(func() {
		cmd := exec.Command("go", "build", "-o", toolsDir+"/",
			"github.com/letsencrypt/pebble/v2/cmd/pebble",
			"github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building pebble: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

func pebbleDir(t *testing.T) string {
	t.Helper()
	pebbleModOnce.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/letsencrypt/pebble/v2").Output()
		if err == nil {
			pebbleModDir = strings.TrimSpace(string(out))
		}
	})
	if pebbleModDir == "" {
		t.Fatal("cannot locate the pebble module (go list -m github.com/letsencrypt/pebble/v2)")
	}
	return pebbleModDir
}

// lockedBuffer collects a subprocess's or logger's output for assertions.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) Count(s string) int { return strings.Count(b.String(), s) }

// testLogger returns a logger whose output the test can search, and which
// is dumped when the test fails.
func testLogger(t *testing.T) (zerolog.Logger, *lockedBuffer) {
	buf := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log output:\n%s", buf.String())
		}
	})
	var w io.Writer = buf
	if os.Getenv("ENVGATE_TEST_LOG") != "" { // to watch a run: ENVGATE_TEST_LOG=1 go test -v
		w = io.MultiWriter(buf, os.Stderr)
	}
	return zerolog.New(w).Level(zerolog.DebugLevel).With().Timestamp().Logger(), buf
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitListening(t *testing.T, addr string, exited <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Fatalf("process for %s exited before listening", addr)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s after 60s", addr)
}

func startProcess(t *testing.T, out io.Writer, env []string, name string, args ...string) <-chan struct{} {
	t.Helper()
	cmd := exec.Command(filepath.Join(toolsDir, name), args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	return exited
}

// pebble is one running Pebble plus challtestsrv as its DNS.
type pebble struct {
	dirURL     string         // ACME directory
	apiRootPEM string         // root of Pebble's own HTTPS certificate (CARoot)
	roots      *x509.CertPool // root of the certificates Pebble issues
	out        *lockedBuffer  // Pebble's log
}

// orders counts the orders Pebble has accepted, from its log.
func (p *pebble) orders() int { return p.out.Count("Added order") }

// startPebble runs Pebble validating HTTP-01 against 127.0.0.1:httpPort and
// TLS-ALPN-01 against 127.0.0.1:tlsPort, with every name resolving to
// 127.0.0.1. Validation is real (PEBBLE_VA_ALWAYS_VALID is unset).
func startPebble(t *testing.T, httpPort, tlsPort int) *pebble {
	t.Helper()
	buildPebble(t)
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	challMgmt := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	challOut := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("challtestsrv output:\n%s", challOut.String())
		}
	})
	exited := startProcess(t, challOut, os.Environ(), "pebble-challtestsrv",
		"-http01", "", "-https01", "", "-doh", "", "-tlsalpn01", "",
		"-dnsserver", dnsAddr, "-management", challMgmt,
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	waitListening(t, challMgmt, exited)
	waitListening(t, dnsAddr, exited)
	return startPebbleWithDNS(t, httpPort, tlsPort, dnsAddr)
}

// startPebbleWithDNS runs Pebble with dnsAddr as its only resolver.
func startPebbleWithDNS(t *testing.T, httpPort, tlsPort int, dnsAddr string) *pebble {
	t.Helper()
	buildPebble(t)
	mod := pebbleDir(t)
	dir := t.TempDir()

	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	mgmt := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress":                  listen,
		"managementListenAddress":        mgmt,
		"certificate":                    filepath.Join(mod, "test/certs/localhost/cert.pem"),
		"privateKey":                     filepath.Join(mod, "test/certs/localhost/key.pem"),
		"httpPort":                       httpPort,
		"tlsPort":                        tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 0, "order": 0},
		"keyAlgorithm":                   "ecdsa",
		"profiles": map[string]any{"default": map[string]any{
			"description": "default", "validityPeriod": 7776000,
		}},
	}}
	confJSON, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confPath, confJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PEBBLE_") {
			env = append(env, kv)
		}
	}
	env = append(env, "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	p := &pebble{
		dirURL:     "https://" + listen + "/dir",
		apiRootPEM: filepath.Join(mod, "test/certs/pebble.minica.pem"),
		out:        &lockedBuffer{},
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble output:\n%s", p.out.String())
		}
	})
	exited := startProcess(t, p.out, env, "pebble", "-config", confPath, "-dnsserver", dnsAddr)
	waitListening(t, listen, exited)
	waitListening(t, mgmt, exited)
	p.roots = fetchPebbleRoot(t, p.apiRootPEM, mgmt)
	return p
}

func fetchPebbleRoot(t *testing.T, apiRootPEM, mgmt string) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(apiRootPEM)
	if err != nil {
		t.Fatal(err)
	}
	api := x509.NewCertPool()
	api.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: api}}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble /roots/0: %d %v", resp.StatusCode, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(body) {
		t.Fatalf("pebble /roots/0: no PEM in %q", body)
	}
	return roots
}

// handshake dials addr with SNI name, verifying against roots, and returns
// the served leaf.
func handshake(ctx context.Context, addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &tls.Dialer{Config: &tls.Config{ServerName: name, RootCAs: roots, NextProtos: []string{"h2"}}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// httpsGet fetches https://name/ from addr over HTTP/2, verifying against roots.
func httpsGet(t *testing.T, addr, name string, roots *x509.CertPool) (*http.Response, string) {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 3 * time.Minute}
	resp, err := client.Get("https://" + name + "/")
	if err != nil {
		t.Fatalf("GET https://%s/: %v", name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}
