package certs

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envgate/envgate/certs/pebbletest"
	"github.com/envgate/envgate/netns/netnstest/wait"
)

const testDomain = "dev.envgate.test"

var errNotAnEnv = errors.New("no such env")

// testAllow allows "feature-x" and every env starting with "ok-", and
// counts its calls.
func testAllow(calls *atomic.Int64) AllowFunc {
	return func(_ context.Context, env string) error {
		calls.Add(1)
		if env == "feature-x" || strings.HasPrefix(env, "ok-") {
			return nil
		}
		return errNotAnEnv
	}
}

// acmeTestConfig points a Manager at Pebble and at the test gateway's ports.
func acmeTestConfig(p *pebble, g *testGateway, stateDir string) Config {
	return Config{
		Mode:                ModeACME,
		Domains:             []string{testDomain},
		StateDir:            stateDir,
		Email:               "ops@envgate.test",
		CA:                  p.dirURL,
		CARoot:              p.apiRootPEM,
		MaxIssuancesPerHour: 100,
		AltHTTPPort:         g.httpPort,
		AltTLSALPNPort:      g.tlsPort,
		HTTPSPort:           g.tlsPort,
	}
}

func newTestManager(t *testing.T, cfg Config, allow AllowFunc) *Manager {
	t.Helper()
	log, _ := testLogger(t)
	m, err := New(cfg, allow, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// awaitCertificate handshakes for sni until one succeeds (certmagic
// obtains a managed certificate in the background after New) and returns
// the certificate served.
func awaitCertificate(t *testing.T, addr, sni string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	var leaf *x509.Certificate
	var err error
	if !wait.Until(3*time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		leaf, err = handshake(ctx, addr, sni, roots)
		return err == nil
	}) {
		t.Fatalf("no certificate for %s after 3 minutes: %v", sni, err)
	}
	return leaf
}

// countACMEOrders counts new-order requests leaving the ACME client, a
// second witness next to Pebble's own log.
func countACMEOrders(t *testing.T) *atomic.Int64 {
	var n atomic.Int64
	acmeRequestHook = func(r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/order-plz") {
			n.Add(1)
		}
	}
	t.Cleanup(func() { acmeRequestHook = nil })
	return &n
}

func TestACMEOnDemand(t *testing.T) {
	g := newTestGateway(t)
	p := startPebble(t, g.httpPort, g.tlsPort)
	ordersSent := countACMEOrders(t)
	var allowCalls atomic.Int64
	stateDir := t.TempDir()
	cfg := acmeTestConfig(p, g, stateDir)
	m := newTestManager(t, cfg, testAllow(&allowCalls))
	g.use(m)
	g.serve(t)

	name := "feature-x." + testDomain
	var firstSerial string

	t.Run("first handshake obtains a certificate", func(t *testing.T) {
		resp, body := httpsGet(t, g.tlsAddr, name, p.roots)
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			t.Fatalf("got %s %s, want 200 over HTTP/2", resp.Status, resp.Proto)
		}
		if want := "hello " + name + " over HTTP/2.0"; body != want {
			t.Fatalf("body %q, want %q", body, want)
		}
		leaf := resp.TLS.PeerCertificates[0]
		if !slices.Equal(leaf.DNSNames, []string{name}) {
			t.Fatalf("certificate names %v, want [%s]", leaf.DNSNames, name)
		}
		firstSerial = leaf.SerialNumber.String()
		if got := p.orders(); got != 1 {
			t.Fatalf("pebble saw %d orders, want 1", got)
		}
	})

	t.Run("names that are not allowed envs cause no ACME traffic", func(t *testing.T) {
		ordersBefore, sentBefore := p.orders(), ordersSent.Load()
		rng := rand.New(rand.NewPCG(1, 2))
		const n = 200
		for i := range n {
			sni := randomRejectedName(rng, i)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := handshake(ctx, g.tlsAddr, sni, p.roots)
			cancel()
			if err == nil {
				t.Fatalf("handshake for %q succeeded; want refusal", sni)
			}
		}
		if got := p.orders() - ordersBefore; got != 0 {
			t.Fatalf("pebble saw %d new orders for rejected names", got)
		}
		if got := ordersSent.Load() - sentBefore; got != 0 {
			t.Fatalf("ACME client sent %d new-order requests for rejected names", got)
		}
		// Still responsive: the allowed name is served at once.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		leaf, err := handshake(ctx, g.tlsAddr, name, p.roots)
		if err != nil || leaf.SerialNumber.String() != firstSerial {
			t.Fatalf("after the rejected names: %v (serial %v, want %s)", err, leaf, firstSerial)
		}
	})

	t.Run("restart serves the stored certificate without a new order", func(t *testing.T) {
		_ = m.Close()
		cfg := cfg
		cfg.DisableTLSALPN = true // the next subtest needs HTTP-01
		m2 := newTestManager(t, cfg, testAllow(&allowCalls))
		g.use(m2)
		ordersBefore := p.orders()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		leaf, err := handshake(ctx, g.tlsAddr, name, p.roots)
		if err != nil {
			t.Fatal(err)
		}
		if leaf.SerialNumber.String() != firstSerial {
			t.Fatalf("serial %s after restart, want the stored %s", leaf.SerialNumber, firstSerial)
		}
		if got := p.orders() - ordersBefore; got != 0 {
			t.Fatalf("restart placed %d new orders", got)
		}
	})

	t.Run("HTTP handler answers HTTP-01 and redirects the rest", func(t *testing.T) {
		before := g.challengesServed.Load()
		resp, _ := httpsGet(t, g.tlsAddr, "ok-http01."+testDomain, p.roots)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %s", resp.Status)
		}
		if g.challengesServed.Load() == before {
			t.Fatal("the certificate was obtained but HTTPHandler served no HTTP-01 challenge")
		}
		req, err := http.NewRequest(http.MethodPost, "http://"+g.httpAddr+"/some/path?q=1", strings.NewReader("body"))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = name
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		r, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		want := fmt.Sprintf("https://%s:%d/some/path?q=1", name, g.tlsPort)
		if r.StatusCode != http.StatusPermanentRedirect || r.Header.Get("Location") != want {
			t.Fatalf("got %d Location %q, want 308 %q", r.StatusCode, r.Header.Get("Location"), want)
		}
	})
}

func TestACMEIssuanceCap(t *testing.T) {
	g := newTestGateway(t)
	p := startPebble(t, g.httpPort, g.tlsPort)
	cfg := acmeTestConfig(p, g, t.TempDir())
	cfg.MaxIssuancesPerHour = 1
	log, logs := testLogger(t)
	m, err := New(cfg, testAllow(new(atomic.Int64)), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	g.use(m)
	g.serve(t)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := handshake(ctx, g.tlsAddr, "ok-first."+testDomain, p.roots); err != nil {
		t.Fatalf("first issuance: %v", err)
	}
	before := p.orders()
	for _, env := range []string{"ok-second", "ok-third"} {
		if _, err := handshake(ctx, g.tlsAddr, env+"."+testDomain, p.roots); err == nil {
			t.Fatalf("%s got a certificate past a cap of 1 per hour", env)
		}
	}
	if got := p.orders() - before; got != 0 {
		t.Fatalf("pebble saw %d orders past the cap", got)
	}
	if n := logs.Count("certificate issuance cap reached"); n != 1 {
		t.Fatalf("cap warning logged %d times, want once (throttled to one a minute)", n)
	}
	// The certificate already obtained is still served.
	if _, err := handshake(ctx, g.tlsAddr, "ok-first."+testDomain, p.roots); err != nil {
		t.Fatalf("stored certificate after the cap: %v", err)
	}
}

// TestACMEHandshakeLatency measures the first handshake for a new name (a
// full ACME order against Pebble) and for a stored one (after a restart, so
// loaded from disk), p50 over 20 names. It reports; it asserts only success.
func TestACMEHandshakeLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("20 ACME orders; skipped in -short")
	}
	g := newTestGateway(t)
	p := startPebble(t, g.httpPort, g.tlsPort)
	cfg := acmeTestConfig(p, g, t.TempDir())
	m := newTestManager(t, cfg, testAllow(new(atomic.Int64)))
	g.use(m)
	g.serve(t)

	// One warm-up order registers the ACME account, which only the first
	// issuance of a new state dir pays for.
	names := []string{"ok-warmup." + testDomain}
	for i := range 20 {
		names = append(names, fmt.Sprintf("ok-lat-%02d.%s", i, testDomain))
	}
	measure := func() []time.Duration {
		var ds []time.Duration
		for _, name := range names {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			start := time.Now()
			_, err := handshake(ctx, g.tlsAddr, name, p.roots)
			ds = append(ds, time.Since(start))
			cancel()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		return ds[1:]
	}
	fresh := measure()
	cached := measure()
	_ = m.Close()
	g.use(newTestManager(t, cfg, testAllow(new(atomic.Int64))))
	stored := measure()
	t.Logf("first handshake, new name (ACME order against Pebble): p50 %v, max %v", p50(fresh), slices.Max(fresh))
	t.Logf("first handshake after restart, stored name (from disk): p50 %v, max %v", p50(stored), slices.Max(stored))
	t.Logf("handshake, name in memory cache: p50 %v, max %v", p50(cached), slices.Max(cached))
}

func p50(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// randomRejectedName makes server names that must never reach a CA: random
// labels the allow function refuses, names under other domains, too many
// labels, invalid labels.
func randomRejectedName(rng *rand.Rand, i int) string {
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
		return "x" + label() + "." + testDomain // valid label, env not allowed
	case 2:
		return label() + ".example.org"
	case 3:
		return "ok-" + label() + "." + label() + "." + testDomain // two labels
	default:
		return "-ok-" + label() + "." + testDomain // invalid label
	}
}

// TestACMEWildcardDNS01 obtains *.dev.envgate.test through a real DNS-01
// flow: certmagic asks the RFC 2136 provider to add the TXT record with a
// TSIG-signed update to a loopback DNS server, and Pebble validates it by
// querying that same server.
func TestACMEWildcardDNS01(t *testing.T) {
	dnsSrv := pebbletest.StartDNS(t, "envgate.test")
	g := newTestGateway(t)
	p := startPebbleWithDNS(t, g.httpPort, g.tlsPort, dnsSrv.Addr)
	cfg := acmeTestConfig(p, g, t.TempDir())
	cfg.Wildcard = &WildcardConfig{
		Nameserver:  dnsSrv.Addr,
		TSIGKeyName: pebbletest.TSIGKey,
		TSIGSecret:  pebbletest.TSIGSecret,
		Resolvers:   []string{dnsSrv.Addr},
		// The propagation check asks the zone's NS hosts on port 53, which
		// do not exist here; Pebble's own lookup is the real check.
		PropagationTimeout: -1,
	}
	var allowCalls atomic.Int64
	m := newTestManager(t, cfg, testAllow(&allowCalls))
	g.use(m)
	g.serve(t)

	// The wildcard is obtained in the background after New; wait for it.
	leaf := awaitCertificate(t, g.tlsAddr, "feature-x."+testDomain, p.roots)
	if !slices.Equal(leaf.DNSNames, []string{"*." + testDomain}) {
		t.Fatalf("served names %v, want the wildcard", leaf.DNSNames)
	}
	serial := leaf.SerialNumber.String()
	if added, _ := dnsSrv.Counts(); added < 1 {
		t.Fatal("certificate obtained without any TXT record added over RFC 2136")
	}
	ordersBefore := p.orders()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, env := range []string{"other", "ok-anything", "x1"} {
		leaf, err := handshake(ctx, g.tlsAddr, env+"."+testDomain, p.roots)
		if err != nil || leaf.SerialNumber.String() != serial {
			t.Fatalf("%s: %v; want the same wildcard", env, err)
		}
	}
	if _, err := handshake(ctx, g.tlsAddr, "a.b."+testDomain, p.roots); err == nil {
		t.Error("a two-label name verified against a one-label wildcard")
	}
	if got := p.orders() - ordersBefore; got != 0 || allowCalls.Load() != 0 {
		t.Fatalf("%d orders and %d allow calls after the wildcard; want none", got, allowCalls.Load())
	}
	// certmagic removes the challenge record once the order is done.
	wait.Until(time.Minute, func() bool { return len(dnsSrv.Records("_acme-challenge."+testDomain)) == 0 })
	if recs := dnsSrv.Records("_acme-challenge." + testDomain); len(recs) > 0 {
		t.Errorf("challenge TXT records left behind: %q", recs)
	}
}
