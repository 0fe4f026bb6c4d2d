package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/certs/pebbletest"
)

const acmeDomain = "dev.envgate.test"

// TestTLSACMEThroughGateway runs the envgate binary in acme mode against
// Pebble, which validates its challenges on the gateway's own listeners
// (HTTP-01 on listen.http, TLS-ALPN-01 on listen.https). Only envs the
// template matches ("feature-*") may get a certificate.
func TestTLSACMEThroughGateway(t *testing.T) {
	s := newTLSSetup(t, acmeDomain)
	s.match = "feature-*"
	// Per-name ACME needs a source that lists its names (issue 13): the
	// names the subtests ask certificates for.
	names := []string{"feature-x", "feature-alpn"}
	for i := range 20 {
		names = append(names, fmt.Sprintf("feature-lat-%02d", i))
	}
	s.source = "{kind: list, names: [" + strings.Join(names, ", ") + "]}"
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: s.httpPort, TLSPort: s.httpsPort})
	s.tls = []string{
		"mode: acme",
		"email: ops@envgate.test",
		"ca: " + p.DirURL,
		"ca_root: " + p.APIRootPEM,
		"max_issuances_per_hour: -1", // the latency subtest orders 20
	}
	g := startTLSGateway(t, s)
	client := tlsClient(t, s.httpsAddr(), p.Roots)
	name := "feature-x." + acmeDomain
	var serial string

	t.Run("first request obtains a certificate and reaches the env over HTTP/2", func(t *testing.T) {
		resp, body := getBody(t, client, "https://"+name+"/")
		if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/2.0" {
			t.Fatalf("got %s %s, want 200 over HTTP/2.0", resp.Status, resp.Proto)
		}
		if !strings.Contains(body, "<h1>feature-x</h1>") {
			t.Fatalf("page does not name feature-x:\n%s", body)
		}
		leaf := resp.TLS.PeerCertificates[0]
		if !slices.Equal(leaf.DNSNames, []string{name}) {
			t.Fatalf("certificate names %v, want [%s]", leaf.DNSNames, name)
		}
		serial = leaf.SerialNumber.String()
		if got := p.Orders(); got != 1 {
			t.Fatalf("pebble saw %d orders, want 1", got)
		}
	})

	t.Run("names that are not allowed envs place no order", func(t *testing.T) {
		before := p.Orders()
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 4))
		for i := range 200 {
			sni := rejectedName(rng, i)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := tlsHandshake(ctx, s.httpsAddr(), sni, p.Roots)
			cancel()
			if err == nil {
				t.Fatalf("handshake for %q succeeded; want refusal", sni)
			}
		}
		if got := p.Orders() - before; got != 0 {
			t.Fatalf("pebble saw %d orders for names that are not allowed envs", got)
		}
		resp, _ := getBody(t, client, "https://"+name+"/")
		if resp.StatusCode != http.StatusOK || resp.TLS.PeerCertificates[0].SerialNumber.String() != serial {
			t.Fatalf("after the refused names: %s, serial %s, want 200 and %s", resp.Status, resp.TLS.PeerCertificates[0].SerialNumber, serial)
		}
	})

	t.Run("plain HTTP redirects to https with 308", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodPost, "http://"+s.httpAddr()+"/some/path?q=1&r=a%20b", strings.NewReader("body"))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = name
		plain := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := plain.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := fmt.Sprintf("https://%s:%d/some/path?q=1&r=a%%20b", name, s.httpsPort)
		if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
			t.Fatalf("got %d Location %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
		}
	})

	// Handshake latency, for the record rather than as an assertion: a new
	// name pays a whole ACME order (the account exists by now); a name in
	// memory pays only the handshake.
	latencyNames := make([]string, 20)
	for i := range latencyNames {
		latencyNames[i] = fmt.Sprintf("feature-lat-%02d.%s", i, acmeDomain)
	}
	measured := false
	t.Run("handshake latency of new names", func(t *testing.T) {
		if testing.Short() {
			t.Skip("20 ACME orders; skipped in -short")
		}
		measured = true
		fresh := measureHandshakes(t, s.httpsAddr(), latencyNames, p.Roots)
		cached := measureHandshakes(t, s.httpsAddr(), latencyNames, p.Roots)
		t.Logf("first handshake, new name (ACME order against Pebble, through the gateway): median %v, max %v", median(fresh), slices.Max(fresh))
		t.Logf("handshake, certificate in memory: median %v, max %v", median(cached), slices.Max(cached))
	})

	t.Run("restart serves the stored certificate without a new order", func(t *testing.T) {
		g.stop(t)
		before := p.Orders()
		startTLSGateway(t, s)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		leaf, err := tlsHandshake(ctx, s.httpsAddr(), name, p.Roots)
		if err != nil {
			t.Fatal(err)
		}
		if leaf.SerialNumber.String() != serial {
			t.Fatalf("serial %s after restart, want the stored %s", leaf.SerialNumber, serial)
		}
		if measured {
			stored := measureHandshakes(t, s.httpsAddr(), latencyNames, p.Roots)
			t.Logf("first handshake after restart, stored name (loaded from disk): median %v, max %v", median(stored), slices.Max(stored))
		}
		if got := p.Orders() - before; got != 0 {
			t.Fatalf("restart placed %d new orders", got)
		}
		resp, body := getBody(t, tlsClient(t, s.httpsAddr(), p.Roots), "https://"+name+"/")
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "<h1>feature-x</h1>") {
			t.Fatalf("after restart: %s\n%s", resp.Status, body)
		}
	})

	// The orders above may all have gone through HTTP-01, certmagic's pick
	// when both are offered; with HTTP-01 disabled the order must use
	// TLS-ALPN-01, answered on the gateway's HTTPS listener.
	t.Run("TLS-ALPN-01 is answered on the HTTPS listener", func(t *testing.T) {
		s.tls = append(s.tls, "disable_http01: true")
		alpnGateway := startTLSGateway(t, s) // the previous subtest's gateway stopped with it
		before := p.Orders()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		alpnName := "feature-alpn." + acmeDomain
		if _, err := tlsHandshake(ctx, s.httpsAddr(), alpnName, p.Roots); err != nil {
			t.Fatal(err)
		}
		if got := p.Orders() - before; got != 1 {
			t.Fatalf("%d orders, want 1", got)
		}
		if !strings.Contains(alpnGateway.log.String(), `"challenge_type":"tls-alpn-01"`) {
			t.Fatal("the certificate was obtained, but not through TLS-ALPN-01")
		}
	})
}

// rejectedName makes server names that must never reach a CA: valid
// labels no template matches, names under other domains, nested labels,
// invalid labels.
func rejectedName(rng *rand.Rand, i int) string {
	label := func() string {
		const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
		b := make([]byte, 1+rng.IntN(20))
		for j := range b {
			b[j] = chars[rng.IntN(len(chars))]
		}
		return string(b)
	}
	switch i % 5 {
	case 0, 1:
		return "other-" + label() + "." + acmeDomain // a valid env name, but no template matches
	case 2:
		return "feature-" + label() + ".example.org" // not under the domain
	case 3:
		return "feature-" + label() + "." + label() + "." + acmeDomain // two labels
	default:
		return "feature-" + label() + "-." + acmeDomain // not a valid label
	}
}

// measureHandshakes times one fresh handshake per name, in order.
func measureHandshakes(t *testing.T, addr string, names []string, roots *x509.CertPool) []time.Duration {
	t.Helper()
	var ds []time.Duration
	for _, name := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		start := time.Now()
		_, err := tlsHandshake(ctx, addr, name, roots)
		ds = append(ds, time.Since(start))
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	return ds
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestTLSInternalThroughGateway runs the binary in internal mode: a local
// CA under state_dir/ca that a client trusts by that root alone, kept
// across restarts, and shown by `envgate trust`.
func TestTLSInternalThroughGateway(t *testing.T) {
	s := newTLSSetup(t, "localhost")
	s.tls = []string{"mode: internal"}
	g := startTLSGateway(t, s)
	rootPath := filepath.Join(s.stateDir, "ca", "root.pem")
	rootPEM, err := os.ReadFile(rootPath)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("no certificate in %s", rootPath)
	}
	resp, body := getBody(t, tlsClient(t, s.httpsAddr(), roots), "https://foo.localhost/")
	if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/2.0" || !strings.Contains(body, "<h1>foo</h1>") {
		t.Fatalf("got %s %s, want 200 over HTTP/2.0 naming foo:\n%s", resp.Status, resp.Proto, body)
	}
	fi, err := os.Stat(filepath.Join(s.stateDir, "ca", "root.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("root key mode %v, want 0600", fi.Mode().Perm())
	}

	g.stop(t)
	startTLSGateway(t, s)
	again, err := os.ReadFile(rootPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(rootPEM) {
		t.Fatal("the root changed across a restart; browsers that trusted it would stop")
	}
	resp, _ = getBody(t, tlsClient(t, s.httpsAddr(), roots), "https://foo.localhost/")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after restart: %s", resp.Status)
	}

	out, err := exec.Command(envgateBinary(t), "--config", s.cfgPath, "trust").Output()
	if err != nil {
		t.Fatalf("envgate trust: %v", err)
	}
	if first, _, _ := strings.Cut(string(out), "\n"); first != rootPath {
		t.Fatalf("envgate trust printed %q first, want the root's path %q", first, rootPath)
	}
}
