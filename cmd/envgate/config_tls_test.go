package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/certs"
)

// tls: errors, including those certs.Config.Validate finds, name the
// file, the line and the key.
func TestTLSConfigErrorsNameFileLineField(t *testing.T) {
	const acme = "domains: [dev.example.com]\ntls:\n  mode: acme\n"
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"bad email", acme + "  email: ops\n", `:4: tls.email: "ops" is not an email address`},
		{"http CA", acme + "  ca: http://ca.test/dir\n", ":4: tls.ca:"},
		{"missing ca_root", acme + "  ca_root: /nonexistent/root.pem\n", ":4: tls.ca_root:"},
		{"cap below -1", acme + "  max_issuances_per_hour: -5\n", ":4: tls.max_issuances_per_hour:"},
		{"alt port", acme + "  alt_http_port: 70000\n", ":4: tls.alt_http_port: port 70000 out of range"},
		{"alt tls-alpn port", acme + "  alt_tls_alpn_port: -1\n", ":4: tls.alt_tls_alpn_port:"},
		{"half EAB", acme + "  eab:\n    key_id: k\n", ":4: tls.eab:"},
		{"acme for localhost", "domains: [localhost]\ntls:\n  mode: acme\n", ":3: tls.mode:"},
		{"files without key", "tls:\n  mode: files\n  cert_file: /c.pem\n", ":1: tls.key_file: required"},
		{"wildcard nameserver without port", acme + "  wildcard:\n    nameserver: ns1.example.com\n", ":5: tls.wildcard.nameserver:"},
		{"wildcard half TSIG", acme + "  wildcard:\n    nameserver: ns1:53\n    tsig_key_name: k\n", ":6: tls.wildcard.tsig_key_name:"},
		{"wildcard secret not base64", acme + "  wildcard:\n    nameserver: ns1:53\n    tsig_key_name: k\n    tsig_secret: \"!!\"\n", ":7: tls.wildcard.tsig_secret:"},
		{"wildcard algorithm", acme + "  wildcard:\n    nameserver: ns1:53\n    tsig_algorithm: hmac-md4\n", ":6: tls.wildcard.tsig_algorithm:"},
		{"wildcard resolver", acme + "  wildcard:\n    nameserver: ns1:53\n    resolvers: [9.9.9.9]\n", ":6: tls.wildcard.resolvers:"},
		{"wildcard propagation", acme + "  wildcard:\n    nameserver: ns1:53\n    propagation_timeout: soon\n", `:6: tls.wildcard.propagation_timeout: "soon"`},
		{"wildcard unknown key", acme + "  wildcard:\n    nameserver: ns1:53\n    tsig_keyname: k\n", ":6: tsig_keyname: unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadString(t, tc.yaml)
			if err == nil {
				t.Fatal("loaded a broken config")
			}
			msg := err.Error()
			if !strings.Contains(msg, "envgate.yaml") || !strings.Contains(msg, tc.want) {
				t.Fatalf("error %q: want it to name the file and contain %q", msg, tc.want)
			}
		})
	}
}

// One mistake, one message: a key this package already rejected is not
// reported again by certs' validation.
func TestTLSConfigErrorReportedOnce(t *testing.T) {
	_, err := loadString(t, "domains: [dev.example.com, \"a..b\"]\ntls:\n  mode: acme\n")
	if err == nil {
		t.Fatal("loaded a broken config")
	}
	if n := strings.Count(err.Error(), "is not a domain name"); n != 1 || !strings.Contains(err.Error(), ":1: domains[1]:") {
		t.Fatalf("want one error naming domains[1], got: %v", err)
	}
}

func TestTLSConfigMapsToCerts(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(root, []byte("read when the gateway starts"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := load(t, `
domains: [dev.example.com]
access: [{allow_cidrs: [10.0.0.0/8]}]
listen: {http: "127.0.0.1:8080", https: ":8443"}
state_dir: /srv/envgate
templates: [{name: web, command: ["true"], port: 3000, user: nobody}]
tls:
  mode: acme
  email: ops@example.com
  ca: https://acme.example.com/directory
  ca_root: `+root+`
  max_issuances_per_hour: 20
  eab: {key_id: kid, mac_key: c2VjcmV0LWtleQ}
  wildcard:
    nameserver: ns1.example.com:53
    tsig_key_name: envgate.
    tsig_secret: c2VjcmV0
    resolvers: ["10.0.0.53:53"]
    propagation_timeout: "off"
`)
	cc := c.certsConfig()
	if cc.Mode != certs.ModeACME || cc.CA != "https://acme.example.com/directory" || cc.CARoot != root ||
		cc.MaxIssuancesPerHour != 20 || cc.EAB == nil || cc.EAB.KeyID != "kid" || cc.StateDir != "/srv/envgate" {
		t.Fatalf("certs config %+v", cc)
	}
	// No alt ports set: certmagic is pointed at the gateway's own
	// listeners, which already answer the challenges.
	if cc.HTTPSPort != 8443 || cc.AltHTTPPort != 8080 || cc.AltTLSALPNPort != 8443 {
		t.Fatalf("ports: https %d, alt http %d, alt tls-alpn %d; want 8443, 8080, 8443", cc.HTTPSPort, cc.AltHTTPPort, cc.AltTLSALPNPort)
	}
	w := cc.Wildcard
	if w == nil || w.Nameserver != "ns1.example.com:53" || w.TSIGKeyName != "envgate." || w.TSIGSecret != "c2VjcmV0" ||
		!slices.Equal(w.Resolvers, []string{"10.0.0.53:53"}) || w.PropagationTimeout != -1 {
		t.Fatalf("wildcard %+v", w)
	}

	c = load(t, "domains: [dev.example.com]\naccess: [{allow_cidrs: [10.0.0.0/8]}]\n"+publicTemplate+"tls:\n  alt_http_port: 5002\n  alt_tls_alpn_port: 5001\n  wildcard: {nameserver: \"ns:53\", propagation_timeout: 30s}\n")
	cc = c.certsConfig()
	if cc.AltHTTPPort != 5002 || cc.AltTLSALPNPort != 5001 || cc.Wildcard.PropagationTimeout != 30*time.Second {
		t.Fatalf("explicit alt ports and timeout: %+v %+v", cc, cc.Wildcard)
	}
}
