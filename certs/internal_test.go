package certs

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestInternalMode(t *testing.T) {
	stateDir := t.TempDir()
	var calls atomic.Int64
	allow := func(_ context.Context, env string) error {
		calls.Add(1)
		if env == "foo" || env == "bar" {
			return nil
		}
		return errNotAnEnv
	}
	cfg := Config{Domains: []string{"localhost"}, StateDir: stateDir}
	m := newTestManager(t, cfg, allow)
	if m.Mode() != ModeInternal {
		t.Fatalf("mode %q for localhost, want internal by default", m.Mode())
	}
	rootPath := m.RootCertPath()
	if rootPath != filepath.Join(stateDir, "ca", "root.pem") {
		t.Fatalf("RootCertPath %q", rootPath)
	}
	rootPEM, err := os.ReadFile(rootPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(stateDir, "ca", "root.key"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Fatalf("root key mode %o, want 600", perm)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatal("root.pem holds no certificate")
	}

	g := newTestGateway(t)
	g.use(m)
	g.serve(t)

	resp, body := httpsGet(t, g.tlsAddr, "foo.localhost", roots)
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 || !strings.Contains(body, "foo.localhost") {
		t.Fatalf("got %s %s %q", resp.Status, resp.Proto, body)
	}
	if names := resp.TLS.PeerCertificates[0].DNSNames; !slices.Equal(names, []string{"foo.localhost"}) {
		t.Fatalf("leaf names %v", names)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range []string{"nope.localhost", "a.foo.localhost", "foo.example.com", "-x.localhost"} {
		if _, err := handshake(ctx, g.tlsAddr, name, roots); err == nil {
			t.Errorf("handshake for %q succeeded; want refusal", name)
		}
	}
	// A cached leaf is served without asking again.
	before := calls.Load()
	if _, err := handshake(ctx, g.tlsAddr, "FOO.localhost.", roots); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != before {
		t.Error("a cached leaf asked the allow function again")
	}

	// Restart: the same root comes back, and clients that trust it still verify.
	_ = m.Close()
	m2 := newTestManager(t, cfg, allow)
	g.use(m2)
	again, err := os.ReadFile(m2.RootCertPath())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, rootPEM) {
		t.Fatal("root changed across a restart")
	}
	if _, err := handshake(ctx, g.tlsAddr, "bar.localhost", roots); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}

func TestInternalRootDamaged(t *testing.T) {
	stateDir := t.TempDir()
	log, _ := testLogger(t)
	m, err := New(Config{Mode: ModeInternal, Domains: []string{"localhost"}, StateDir: stateDir}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	_ = m.Close()
	if err := os.Remove(m.RootCertPath()); err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{Mode: ModeInternal, Domains: []string{"localhost"}, StateDir: stateDir}, nil, log)
	if err == nil || !strings.Contains(err.Error(), "only one of") {
		t.Fatalf("New with a key but no root: %v; want a refusal that names both files", err)
	}
}

func TestInstallRoot(t *testing.T) {
	stateDir := t.TempDir()
	m := newTestManager(t, Config{Domains: []string{"localhost"}, StateDir: stateDir}, nil)
	dest := t.TempDir()
	var out bytes.Buffer
	// "true" stands in for update-ca-certificates: the test must not change
	// the machine's trust store.
	if err := installRoot(m.RootCertPath(), dest, []string{"true"}, &out); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dest, installedCAName))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(m.RootCertPath())
	if !bytes.Equal(got, want) {
		t.Fatal("installed root differs from the CA's")
	}
	for _, s := range []string{"certutil -d sql:$HOME/.pki/nssdb", m.RootCertPath(), "security add-trusted-cert"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("instructions lack %q:\n%s", s, out.String())
		}
	}
	if err := installRoot(filepath.Join(stateDir, "ca", "root.key"), dest, []string{"true"}, &out); err == nil {
		t.Error("installing a private key as a root succeeded")
	}
	if err := installRoot(m.RootCertPath(), dest, []string{"false"}, &out); err == nil {
		t.Error("a failing update-ca-certificates was not reported")
	}
}

// TestInternalRootOnceForSharedStateDir: gateways sharing one state dir
// (a cluster's nodes) that start at once make one root between them, and
// each holds that root's own key.
func TestInternalRootOnceForSharedStateDir(t *testing.T) {
	stateDir := t.TempDir()
	log, _ := testLogger(t)
	const n = 8
	roots := make([]*x509.Certificate, n)
	keys := make([]any, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var key crypto.Signer
			roots[i], key, errs[i] = loadOrCreateRootLocked(filepath.Join(stateDir, "ca"), []string{"localhost"}, log)
			if key != nil {
				keys[i] = key.Public()
			}
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("gateway %d: %v", i, errs[i])
		}
		if !roots[i].Equal(roots[0]) {
			t.Fatalf("gateway %d made a root of its own (serial %v, gateway 0's %v)", i, roots[i].SerialNumber, roots[0].SerialNumber)
		}
		if pub, ok := keys[i].(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(roots[i].PublicKey) {
			t.Fatalf("gateway %d holds a key that is not its root's", i)
		}
	}
}
