package certs

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// TestInternalHostsAndForget: a Config.Hosts name gets a certificate
// without the allow function being asked (it is no env), a name beside it
// does not; Forget drops an env's leaf, so the next handshake asks again
// and gets a new one; a host outside the CA's name constraint is refused
// at New.
func TestInternalHostsAndForget(t *testing.T) {
	stateDir := t.TempDir()
	var calls atomic.Int64
	allow := func(_ context.Context, env string) error {
		calls.Add(1)
		if env == "foo" {
			return nil
		}
		return errNotAnEnv
	}
	m := newTestManager(t, Config{Mode: ModeInternal, Domains: []string{"localhost"}, Hosts: []string{"LocalHost."}, StateDir: stateDir}, allow)
	rootPEM, err := os.ReadFile(m.RootCertPath())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	g := newTestGateway(t)
	g.use(m)
	g.serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	leaf, err := handshake(ctx, g.tlsAddr, "localhost", roots)
	if err != nil {
		t.Fatalf("handshake for the host: %v", err)
	}
	if !slices.Equal(leaf.DNSNames, []string{"localhost"}) || calls.Load() != 0 {
		t.Fatalf("host's leaf names %v, allow asked %d times; want [localhost] and never", leaf.DNSNames, calls.Load())
	}
	for _, name := range []string{"nope.localhost", "x.localhost.localhost"} {
		if _, err := handshake(ctx, g.tlsAddr, name, roots); err == nil {
			t.Errorf("handshake for %q succeeded; only the host itself is exempt", name)
		}
	}

	first, err := handshake(ctx, g.tlsAddr, "foo.localhost", roots)
	if err != nil {
		t.Fatal(err)
	}
	before := calls.Load()
	if again, err := handshake(ctx, g.tlsAddr, "foo.localhost", roots); err != nil || !again.Equal(first) || calls.Load() != before {
		t.Fatalf("cached leaf: %v, same %v, allow asked again %v", err, again != nil && again.Equal(first), calls.Load() != before)
	}
	if err := m.Forget(ctx, "foo"); err != nil {
		t.Fatal(err)
	}
	second, err := handshake(ctx, g.tlsAddr, "foo.localhost", roots)
	if err != nil {
		t.Fatal(err)
	}
	if second.Equal(first) || calls.Load() == before {
		t.Errorf("after Forget: same leaf %v, allow asked again %v; want a new leaf after a new decision", second.Equal(first), calls.Load() != before)
	}
	if err := m.Forget(ctx, "foo.localhost"); err == nil {
		t.Error("Forget of a name that is no label succeeded")
	}

	log, _ := testLogger(t)
	_, err = New(Config{Mode: ModeInternal, Domains: []string{"localhost"}, Hosts: []string{"hooks.example.com"}, StateDir: t.TempDir()}, allow, log)
	if err == nil || !strings.Contains(err.Error(), "hooks.example.com") {
		t.Errorf("internal CA with a host outside its domains: %v, want an error naming it", err)
	}
}

// TestACMEHostsAndForget (Pebble): the bare domain, given as a host, gets
// a certificate although it is no env hostname; Forget removes an env's
// certificate from storage and cache, so the next handshake orders a new
// one, and the host's certificate stays.
func TestACMEHostsAndForget(t *testing.T) {
	g := newTestGateway(t)
	p := startPebble(t, g.httpPort, g.tlsPort)
	var calls atomic.Int64
	stateDir := t.TempDir()
	cfg := acmeTestConfig(p, g, stateDir)
	cfg.Hosts = []string{testDomain}
	m := newTestManager(t, cfg, testAllow(&calls))
	g.use(m)
	g.serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	host, err := handshake(ctx, g.tlsAddr, testDomain, p.roots)
	if err != nil {
		t.Fatalf("handshake for the host %s: %v", testDomain, err)
	}
	if !slices.Equal(host.DNSNames, []string{testDomain}) || calls.Load() != 0 {
		t.Fatalf("host's certificate names %v, allow asked %d times; want [%s] and never", host.DNSNames, calls.Load(), testDomain)
	}
	name := "feature-x." + testDomain
	first, err := handshake(ctx, g.tlsAddr, name, p.roots)
	if err != nil {
		t.Fatal(err)
	}
	issuerDir := filepath.Join(stateDir, "certs", "certificates", certmagic.StorageKeys.Safe(m.acme.issuer.IssuerKey()))
	stored := filepath.Join(issuerDir, name)
	if _, err := os.Stat(filepath.Join(stored, name+".key")); err != nil {
		t.Fatalf("env certificate's key not in storage: %v", err)
	}
	orders := p.orders()
	if err := m.Forget(ctx, "feature-x"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stored); !os.IsNotExist(err) {
		t.Errorf("%s after Forget: %v, want it gone", stored, err)
	}
	if _, err := os.Stat(filepath.Join(issuerDir, testDomain)); err != nil {
		t.Errorf("the host's certificate went with the env's: %v", err)
	}
	second, err := handshake(ctx, g.tlsAddr, name, p.roots)
	if err != nil {
		t.Fatal(err)
	}
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 || p.orders() != orders+1 {
		t.Errorf("after Forget: serial same %v, %d new orders; want a new certificate from one new order",
			second.SerialNumber.Cmp(first.SerialNumber) == 0, p.orders()-orders)
	}
	if again, err := handshake(ctx, g.tlsAddr, testDomain, p.roots); err != nil || again.SerialNumber.Cmp(host.SerialNumber) != 0 {
		t.Errorf("the host's certificate after Forget: %v (same %v)", err, again != nil && again.SerialNumber.Cmp(host.SerialNumber) == 0)
	}

	// Evict (another cluster node's destroy) drops the certificate from
	// the cache only: the next handshake loads it from storage.
	if n := len(m.acme.cache.AllMatchingCertificates(name)); n != 1 {
		t.Fatalf("%d certificates for %s in the cache before Evict, want 1", n, name)
	}
	orders = p.orders()
	if err := m.Evict("feature-x"); err != nil {
		t.Fatal(err)
	}
	if n := len(m.acme.cache.AllMatchingCertificates(name)); n != 0 {
		t.Errorf("%d certificates for %s in the cache after Evict, want 0", n, name)
	}
	if _, err := os.Stat(filepath.Join(stored, name+".key")); err != nil {
		t.Errorf("Evict removed the stored certificate: %v", err)
	}
	third, err := handshake(ctx, g.tlsAddr, name, p.roots)
	if err != nil {
		t.Fatal(err)
	}
	if third.SerialNumber.Cmp(second.SerialNumber) != 0 || p.orders() != orders {
		t.Errorf("after Evict: serial same %v, %d new orders; want the stored certificate, no order",
			third.SerialNumber.Cmp(second.SerialNumber) == 0, p.orders()-orders)
	}
}
