package main

import (
	"context"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// TestCertificateMetrics: with the internal CA, the first handshake for
// an env's name counts a certificate obtained, a second one (served from
// memory) counts nothing, and the bytes of the HTTPS connection count.
func TestCertificateMetrics(t *testing.T) {
	s := newTLSSetup(t, "localhost")
	s.tls = []string{"mode: internal"}
	startTLSGateway(t, s)
	rootPEM, err := os.ReadFile(filepath.Join(s.stateDir, "ca", "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	c, err := (&globalFlags{config: s.cfgPath}).adminClient()
	if err != nil {
		t.Fatal(err)
	}
	scrape := func() (obtained, failed, sent float64) {
		t.Helper()
		resp, err := c.Do(context.Background(), "GET", "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		m := parseMetrics(t, resp.Body)
		return metricValue(m, "envgate_certificate_events_total", "event", "obtained"),
			metricValue(m, "envgate_certificate_events_total", "event", "failed"),
			metricValue(m, "envgate_client_bytes_total", "direction", "sent")
	}
	if o, f, _ := scrape(); o != 0 || f != 0 {
		t.Fatalf("before any handshake: obtained %v, failed %v", o, f)
	}
	for i := range 2 {
		resp, _ := getBody(t, tlsClient(t, s.httpsAddr(), roots), "https://foo.localhost/")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("foo: %s", resp.Status)
		}
		o, f, sent := scrape()
		if o != 1 || f != 0 {
			t.Errorf("after handshake %d: obtained %v, failed %v; want 1, 0", i+1, o, f)
		}
		if sent < 1000 { // a certificate chain and a page at least
			t.Errorf("after handshake %d: %v bytes sent", i+1, sent)
		}
	}
}
