package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// signLeaf signs a server certificate for name with the root and key in
// stateDir/ca, as whoever copied those files could.
func signLeaf(t *testing.T, stateDir, name string) *x509.Certificate {
	t.Helper()
	certPEM, err := os.ReadFile(filepath.Join(stateDir, "ca", rootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(stateDir, "ca", rootKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	root, rootKey, err := parseRoot(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, root, &key.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func rootPool(t *testing.T, stateDir string) (*x509.CertPool, *x509.Certificate) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, "ca", rootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatal("root.pem: no PEM block")
	}
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return pool, root
}

// Issue 13, test 5: the internal CA's root is name-constrained to the
// configured domains, so even its own key cannot make a certificate that
// verifies for any other site.
func TestInternalRootNameConstrained(t *testing.T) {
	stateDir := t.TempDir()
	domains := []string{"dev.example.com", "localhost"}
	newTestManager(t, Config{Mode: ModeInternal, Domains: domains, StateDir: stateDir}, nil)
	pool, root := rootPool(t, stateDir)

	if !root.PermittedDNSDomainsCritical || !slices.Equal(root.PermittedDNSDomains, domains) {
		t.Fatalf("root constraints %v (critical %v), want %v, critical", root.PermittedDNSDomains, root.PermittedDNSDomainsCritical, domains)
	}
	if life := root.NotAfter.Sub(root.NotBefore); life > 2*365*24*time.Hour+2*time.Hour {
		t.Fatalf("root lives %v, want at most 2 years", life)
	}
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"feature-x.dev.example.com", true},
		{"dev.example.com", true},
		{"a.b.dev.example.com", true}, // the constraint covers every level below
		{"app.localhost", true},
		{"www.example.com", false},
		{"example.com", false},
		{"bank.example.org", false},
		{"dev.example.com.evil.test", false},
		{"xdev.example.com", false},
	} {
		leaf := signLeaf(t, stateDir, tc.name)
		_, err := leaf.Verify(x509.VerifyOptions{DNSName: tc.name, Roots: pool})
		var inv x509.CertificateInvalidError
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: %v; want it to verify", tc.name, err)
		case !tc.ok && err == nil:
			t.Errorf("%s: a certificate outside the domains verified against the root", tc.name)
		case !tc.ok && (!errors.As(err, &inv) || inv.Reason != x509.CANotAuthorizedForThisName):
			t.Errorf("%s: %v; want CANotAuthorizedForThisName", tc.name, err)
		}
	}
}

// writeRoot stores a root made from tmpl (self-signed) in stateDir/ca, as
// an older envgate would have.
func writeRoot(t *testing.T, stateDir string, tmpl *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = randomSerial()
	tmpl.Subject = pkix.Name{CommonName: "old envgate local CA"}
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, crypto.Signer(key))
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(stateDir, "ca")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, rootKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, rootCertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Roots made before name constraints (or for other domains, or too long
// lived, or about to expire) are replaced at start, with a warning saying
// how to trust the new one; a fit root stays.
func TestInternalRootReplaced(t *testing.T) {
	now := time.Now()
	domains := []string{"localhost"}
	for _, tc := range []struct {
		name   string
		tmpl   x509.Certificate
		reason string // "" : kept
	}{
		{"no constraints, 10 years", x509.Certificate{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour)}, "no name constraints"},
		{"other domains", x509.Certificate{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
			PermittedDNSDomainsCritical: true, PermittedDNSDomains: []string{"example.com"}}, "are not the configured domains"},
		{"not critical", x509.Certificate{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
			PermittedDNSDomains: domains}, "not critical"},
		{"extra exclusions", x509.Certificate{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
			PermittedDNSDomainsCritical: true, PermittedDNSDomains: domains, ExcludedDNSDomains: []string{"x.localhost"}}, "other than the configured"},
		{"constrained but 5 years", x509.Certificate{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(5 * 365 * 24 * time.Hour),
			PermittedDNSDomainsCritical: true, PermittedDNSDomains: domains}, "longer than"},
		{"expires in a week", x509.Certificate{NotBefore: now.Add(-700 * 24 * time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
			PermittedDNSDomainsCritical: true, PermittedDNSDomains: domains}, "expires on"},
		{"fit", x509.Certificate{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
			PermittedDNSDomainsCritical: true, PermittedDNSDomains: domains}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stateDir := t.TempDir()
			writeRoot(t, stateDir, &tc.tmpl)
			oldPEM, _ := os.ReadFile(filepath.Join(stateDir, "ca", rootCertFile))
			oldKey, _ := os.ReadFile(filepath.Join(stateDir, "ca", rootKeyFile))
			log, logs := testLogger(t)
			m, err := New(Config{Mode: ModeInternal, Domains: domains, StateDir: stateDir}, nil, log)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = m.Close() })
			newPEM, _ := os.ReadFile(m.RootCertPath())
			newKey, _ := os.ReadFile(filepath.Join(stateDir, "ca", rootKeyFile))
			if tc.reason == "" {
				if !bytes.Equal(newPEM, oldPEM) || logs.Count("replaced") != 0 {
					t.Fatal("a fit root was replaced")
				}
				return
			}
			if bytes.Equal(newPEM, oldPEM) || bytes.Equal(newKey, oldKey) {
				t.Fatal("the unfit root (or its key) is still in place")
			}
			_, root := rootPool(t, stateDir)
			if !root.PermittedDNSDomainsCritical || !slices.Equal(root.PermittedDNSDomains, domains) {
				t.Fatalf("new root constraints %v", root.PermittedDNSDomains)
			}
			for _, want := range []string{"replaced the local certificate authority's root", tc.reason, "envgate trust --install"} {
				if logs.Count(want) != 1 {
					t.Errorf("log lacks %q:\n%s", want, logs.String())
				}
			}
			// The next start keeps the new root.
			_ = m.Close()
			m2, err := New(Config{Mode: ModeInternal, Domains: domains, StateDir: stateDir}, nil, log)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = m2.Close() })
			again, _ := os.ReadFile(m2.RootCertPath())
			if !bytes.Equal(again, newPEM) {
				t.Fatal("the new root was replaced again")
			}
		})
	}
	// A change of domains is a change of constraints: a new root.
	t.Run("domains changed", func(t *testing.T) {
		stateDir := t.TempDir()
		newTestManager(t, Config{Mode: ModeInternal, Domains: []string{"localhost"}, StateDir: stateDir}, nil)
		_, first := rootPool(t, stateDir)
		newTestManager(t, Config{Mode: ModeInternal, Domains: []string{"localhost", "dev.example.com"}, StateDir: stateDir}, nil)
		_, second := rootPool(t, stateDir)
		if first.Equal(second) || !slices.Equal(slices.Sorted(slices.Values(second.PermittedDNSDomains)), []string{"dev.example.com", "localhost"}) {
			t.Fatalf("after adding a domain: constraints %v", second.PermittedDNSDomains)
		}
	})
}
