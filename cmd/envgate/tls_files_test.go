package main

import (
	"context"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envgate/envgate/certs/certstest"
	"github.com/envgate/envgate/netns/netnstest/wait"
)

// TestTLSFilesReloadThroughGateway replaces the certificate and key files
// under a running gateway, while a client keeps handshaking: the new
// certificate is served within seconds, with no restart and no failed
// handshake (the key and certificate are replaced one after the other, so
// for a moment they do not match).
func TestTLSFilesReloadThroughGateway(t *testing.T) {
	ca := certstest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	certA, keyA, serialA := ca.Leaf(t, "foo.localhost")
	replaceFile(t, certFile, certA)
	replaceFile(t, keyFile, keyA)

	s := newTLSSetup(t, "localhost")
	s.tls = []string{"mode: files", "cert_file: " + certFile, "key_file: " + keyFile}
	g := startTLSGateway(t, s)
	resp, _ := getBody(t, tlsClient(t, s.httpsAddr(), ca.Pool), "https://foo.localhost/")
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
			_, err := tlsHandshake(ctx, s.httpsAddr(), "foo.localhost", ca.Pool)
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

	certB, keyB, serialB := ca.Leaf(t, "foo.localhost")
	replaceFile(t, certFile, certB)
	waitFor(t, "a poll to see the mismatched pair", func() bool { return g.log.Count("certificate files not loadable") > 0 })
	replaceFile(t, keyFile, keyB)
	var err error
	if !wait.Until(time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var leaf *x509.Certificate
		leaf, err = tlsHandshake(ctx, s.httpsAddr(), "foo.localhost", ca.Pool)
		return err == nil && leaf.SerialNumber.String() == serialB
	}) {
		t.Fatalf("still not serving the new certificate 60s after the files changed (last: %v)", err)
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
