package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestTLSFilesReloadThroughGateway replaces the certificate and key files
// under a running gateway, while a client keeps handshaking: the new
// certificate is served within seconds, with no restart and no failed
// handshake (the key and certificate are replaced one after the other, so
// for a moment they do not match).
func TestTLSFilesReloadThroughGateway(t *testing.T) {
	ca := newFilesCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	certA, keyA, serialA := ca.leaf(t, "foo.localhost")
	replaceFile(t, certFile, certA)
	replaceFile(t, keyFile, keyA)

	s := newTLSSetup(t, "localhost")
	s.tls = []string{"mode: files", "cert_file: " + certFile, "key_file: " + keyFile}
	startTLSGateway(t, s)
	resp, _ := getBody(t, tlsClient(t, s.httpsAddr(), ca.pool), "https://foo.localhost/")
	if resp.StatusCode != http.StatusOK || resp.TLS.PeerCertificates[0].SerialNumber.String() != serialA {
		t.Fatalf("got %s serial %s, want 200 and %s", resp.Status, resp.TLS.PeerCertificates[0].SerialNumber, serialA)
	}

	// Handshake continuously until told to stop, counting failures.
	var handshakes, failures atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := tlsHandshake(ctx, s.httpsAddr(), "foo.localhost", ca.pool)
			cancel()
			handshakes.Add(1)
			if err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		}
	})
	stopLoop := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoop()

	certB, keyB, serialB := ca.leaf(t, "foo.localhost")
	replaceFile(t, certFile, certB)
	time.Sleep(1500 * time.Millisecond) // let a poll see the mismatched pair
	replaceFile(t, keyFile, keyB)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		leaf, err := tlsHandshake(ctx, s.httpsAddr(), "foo.localhost", ca.pool)
		cancel()
		if err == nil && leaf.SerialNumber.String() == serialB {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still not serving the new certificate 60s after the files changed (last: %v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopLoop()
	if handshakes.Load() == 0 {
		t.Fatal("no handshake ran during the swap")
	}
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d handshakes failed during the swap; first: %v", n, handshakes.Load(), firstErr.Load())
	}
	t.Logf("%d handshakes during the swap, none failed", handshakes.Load())
}

// filesCA signs leaf certificates for files mode.
type filesCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newFilesCA(t *testing.T) *filesCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "envgate test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &filesCA{cert: cert, key: key, pool: pool}
}

// leaf returns a new certificate and key for names, PEM-encoded, and the
// certificate's serial.
func (ca *filesCA) leaf(t *testing.T, names ...string) (certPEM, keyPEM []byte, serial string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
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
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), sn.String()
}

// replaceFile writes data to path the way deploy tools do: a new file
// renamed over the old, so a reader never sees half of it.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
