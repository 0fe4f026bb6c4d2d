// Package clustertest runs a real etcd server for tests: the embedded
// server of go.etcd.io/etcd/server/v3/embed in the test process, on
// loopback ports, its data in a temporary directory.
package clustertest

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/envgate/envgate/certs/certstest"
	"github.com/envgate/envgate/netns/netnstest"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Etcd is a running (or stopped) test etcd.
type Etcd struct {
	cfg *embed.Config
	e   *embed.Etcd
	// Endpoint is its client URL, http://127.0.0.1:<port> (https with
	// StartTLS).
	Endpoint string
	// CAFile, CertFile and KeyFile are set by StartTLS: the CA that signed
	// the server's certificate, and a client certificate and key it
	// accepts.
	CAFile, CertFile, KeyFile string
}

// Start runs an etcd until the test ends.
func Start(t testing.TB) *Etcd {
	t.Helper()
	return start(t, false)
}

// StartTLS runs an etcd that serves its clients TLS only and admits only
// those with a client certificate from its CA, until the test ends.
func StartTLS(t testing.TB) *Etcd {
	t.Helper()
	return start(t, true)
}

func start(t testing.TB, withTLS bool) *Etcd {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.Name = "test"
	cfg.LogLevel = "error"
	scheme := "http"
	te := &Etcd{cfg: cfg}
	if withTLS {
		scheme = "https"
		dir := t.TempDir()
		ca := certstest.NewCA(t)
		te.CAFile = writeFile(t, dir, "ca.pem", ca.PEM())
		// The server's certificate is its client one too (etcd dials
		// itself for its gRPC gateway).
		srvCert, srvKey := leaf(t, ca, dir, "server")
		te.CertFile, te.KeyFile = leaf(t, ca, dir, "client")
		cfg.ClientTLSInfo = transport.TLSInfo{CertFile: srvCert, KeyFile: srvKey, TrustedCAFile: te.CAFile, ClientCertAuth: true}
	}
	cu, _ := url.Parse(fmt.Sprintf("%s://127.0.0.1:%d", scheme, netnstest.LoopbackPort(t)))
	pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", netnstest.LoopbackPort(t)))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	te.Endpoint = cu.String()
	te.Resume(t)
	t.Cleanup(te.Stop)
	return te
}

// Resume starts the server again (after Stop), on the same ports and
// data.
func (te *Etcd) Resume(t testing.TB) {
	t.Helper()
	e, err := embed.StartEtcd(te.cfg)
	if err != nil {
		t.Fatalf("etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		t.Fatal("etcd not ready after 30s")
	}
	te.e = e
}

// Stop stops the server; Resume starts it again.
func (te *Etcd) Stop() {
	if te.e != nil {
		te.e.Close()
		te.e = nil
	}
}

// Client is a client of the server, closed when the test ends.
func (te *Etcd) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	var tc *tls.Config
	if te.CAFile != "" {
		var err error
		tc, err = (&transport.TLSInfo{CertFile: te.CertFile, KeyFile: te.KeyFile, TrustedCAFile: te.CAFile}).ClientConfig()
		if err != nil {
			t.Fatal(err)
		}
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{te.Endpoint}, TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// leaf writes a certificate for 127.0.0.1 signed by ca, good for a TLS
// server and client both, and its key, in dir; it returns their paths.
func leaf(t testing.TB, ca *certstest.CA, dir, name string) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM := ca.Sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "etcd test " + name}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	})
	return writeFile(t, dir, name+".pem", certPEM), writeFile(t, dir, name+"-key.pem", keyPEM)
}

// writeFile writes b to dir/name; it returns the path.
func writeFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
