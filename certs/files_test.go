package certs

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envgate/envgate/certs/certstest"
	"github.com/envgate/envgate/netns/netnstest/wait"
)

func TestFilesModeReload(t *testing.T) {
	ca := certstest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	certA, keyA, serialA := ca.Leaf(t, "*."+testDomain)
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
			leaf, err := handshake(ctx, g.tlsAddr, "feature-x."+testDomain, ca.Pool)
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
		wait.For(t, 30*time.Second, "serial "+serial+" served", func() bool {
			s := served.Load()
			return s != nil && *s == serial
		})
	}
	waitServed(serialA)

	// Replace both files the way cert-manager does: one rename after the
	// other, so for a moment the key does not match the certificate.
	certB, keyB, serialB := ca.Leaf(t, "*."+testDomain)
	writeFileAtomicTest(t, certFile, certB)
	waitLogged(t, logs, "certificate files not loadable", 1) // a poll saw the mismatched pair
	writeFileAtomicTest(t, keyFile, keyB)
	waitServed(serialB)

	// A half-written certificate must not replace the good one.
	writeFile(t, certFile, certB[:len(certB)/2])
	waitLogged(t, logs, "certificate files not loadable", 2)
	before := ok.Load()
	wait.For(t, 30*time.Second, "5 handshakes after the poll read the half-written file", func() bool { return ok.Load() >= before+5 })
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
	if !wait.Until(30*time.Second, func() bool { return logs.Count(msg) >= n }) {
		t.Fatalf("%q logged %d times within 30s, want %d", msg, logs.Count(msg), n)
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
