package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envgate/envgate/certs/pebbletest"
	"github.com/rs/zerolog"
)

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

// pebble is one running Pebble (see certs/pebbletest) as these tests use it.
type pebble struct {
	dirURL     string         // ACME directory
	apiRootPEM string         // root of Pebble's own HTTPS certificate (CARoot)
	roots      *x509.CertPool // root of the certificates Pebble issues
	p          *pebbletest.Pebble
}

// orders counts the orders Pebble has accepted, from its log.
func (p *pebble) orders() int { return p.p.Orders() }

// startPebble runs Pebble validating HTTP-01 against 127.0.0.1:httpPort and
// TLS-ALPN-01 against 127.0.0.1:tlsPort, with every name resolving to
// 127.0.0.1. Validation is real (PEBBLE_VA_ALWAYS_VALID is unset).
func startPebble(t *testing.T, httpPort, tlsPort int) *pebble {
	t.Helper()
	return startPebbleWithDNS(t, httpPort, tlsPort, "")
}

// startPebbleWithDNS runs Pebble with dnsAddr as its only resolver (a
// challtestsrv answering 127.0.0.1 for every name when dnsAddr is "").
func startPebbleWithDNS(t *testing.T, httpPort, tlsPort int, dnsAddr string) *pebble {
	t.Helper()
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort, TLSPort: tlsPort, DNS: dnsAddr})
	return &pebble{dirURL: p.DirURL, apiRootPEM: p.APIRootPEM, roots: p.Roots, p: p}
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
