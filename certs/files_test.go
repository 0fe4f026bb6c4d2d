package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testCA mints certificates the way a company CA or cert-manager would.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf returns a PEM certificate and key for names, and the serial.
func (ca *testCA) leaf(t *testing.T, names ...string) (certPEM, keyPEM []byte, serial string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(), DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		tmpl.SerialNumber.String()
}

func TestFilesModeReload(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	certA, keyA, serialA := ca.leaf(t, "*."+testDomain)
	writeFile(t, certFile, certA)
	writeFile(t, keyFile, keyA)

	log, logs := testLogger(t)
	m, err := New(Config{Mode: ModeFiles, Domains: []string{testDomain}, CertFile: certFile, KeyFile: keyFile}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	g := newTestGateway(t)
	g.use(m)
	g.serve(t)

	// Handshakes in a loop for the whole test; every one must succeed.
	var served atomic.Pointer[string]
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			leaf, err := handshake(ctx, g.tlsAddr, "feature-x."+testDomain, ca.pool)
			cancel()
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
				continue
			}
			ok.Add(1)
			s := leaf.SerialNumber.String()
			served.Store(&s)
		}
	}()
	stopLoop := func() {
		select {
		case <-stop:
		default:
			close(stop)
			wg.Wait()
		}
	}
	t.Cleanup(stopLoop)
	waitServed := func(serial string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if s := served.Load(); s != nil && *s == serial {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("serial %s not served within 30s", serial)
	}
	waitServed(serialA)

	// Replace both files the way cert-manager does: one rename after the
	// other, so for a moment the key does not match the certificate.
	certB, keyB, serialB := ca.leaf(t, "*."+testDomain)
	writeFileAtomicTest(t, certFile, certB)
	waitLogged(t, logs, "certificate files not loadable", 1) // a poll saw the mismatched pair
	writeFileAtomicTest(t, keyFile, keyB)
	waitServed(serialB)

	// A half-written certificate must not replace the good one.
	writeFile(t, certFile, certB[:len(certB)/2])
	waitLogged(t, logs, "certificate files not loadable", 2)
	deadline := time.Now().Add(30 * time.Second)
	before := ok.Load()
	for ok.Load() < before+5 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if s := served.Load(); *s != serialB {
		t.Fatalf("serving %s after a half-written file, want %s", *s, serialB)
	}

	stopLoop()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d handshakes failed during reloads; first: %v", failed.Load(), failed.Load()+ok.Load(), firstErr.Load())
	}
	t.Logf("%d handshakes, none failed", ok.Load())
}

func waitLogged(t *testing.T, logs *lockedBuffer, msg string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for logs.Count(msg) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%q logged %d times within 30s, want %d", msg, logs.Count(msg), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeFileAtomicTest(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := writeFileAtomic(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
