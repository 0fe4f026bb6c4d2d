package certs

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/envgate/envgate/certs/certstest"
	"github.com/rs/zerolog"
	"go.uber.org/zap"
)

func TestValidate(t *testing.T) {
	acme := func(mod func(*Config)) Config {
		c := Config{Mode: ModeACME, Domains: []string{"dev.example.com"}, StateDir: "/var/lib/envgate"}
		mod(&c)
		return c
	}
	f := false
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // "" means valid
	}{
		{"empty mode on localhost is internal", Config{Domains: []string{"localhost"}, StateDir: "/s"}, ""},
		{"off needs nothing", Config{Mode: ModeOff}, ""},
		{"unknown mode", Config{Mode: "letsencrypt"}, "tls.mode:"},
		{"acme defaults", acme(func(*Config) {}), ""},
		{"acme no domains", acme(func(c *Config) { c.Domains = nil }), "domains:"},
		{"bad domain", acme(func(c *Config) { c.Domains = []string{"*.dev.example.com"} }), "domains:"},
		{"acme for localhost", acme(func(c *Config) { c.Domains = []string{"localhost"} }), "tls.mode:"},
		{"acme no state dir", acme(func(c *Config) { c.StateDir = "" }), "state_dir:"},
		{"bad email", acme(func(c *Config) { c.Email = "ops" }), "tls.email:"},
		{"http CA", acme(func(c *Config) { c.CA = "http://ca.example/dir" }), "tls.ca:"},
		{"half EAB", acme(func(c *Config) { c.EAB = &EAB{KeyID: "k"} }), "tls.eab:"},
		{"EAB mac not base64url", acme(func(c *Config) { c.EAB = &EAB{KeyID: "k", MACKey: "a+b/"} }), "tls.eab.mac_key:"},
		{"EAB ok", acme(func(c *Config) { c.EAB = &EAB{KeyID: "k", MACKey: "c2VjcmV0LWtleQ"} }), ""},
		{"cap below -1", acme(func(c *Config) { c.MaxIssuancesPerHour = -2 }), "tls.max_issuances_per_hour:"},
		{"weekly cap below -1", acme(func(c *Config) { c.MaxOrdersPerWeek = -2 }), "tls.max_orders_per_week:"},
		{"per-name ACME for any name", acme(func(c *Config) { c.AnyEnv = true }), "source.kind: any allows every valid name"},
		{"wildcard for any name", acme(func(c *Config) { c.AnyEnv = true; c.Wildcard = &WildcardConfig{Nameserver: "ns:53"} }), ""},
		{"internal for any name", Config{Mode: ModeInternal, Domains: []string{"localhost"}, StateDir: "/s", AnyEnv: true}, ""},
		{"no challenge left", acme(func(c *Config) { c.DisableHTTP01, c.DisableTLSALPN = true, true }), "tls.disable_http01:"},
		{"alt port", acme(func(c *Config) { c.AltHTTPPort = 70000 }), "tls.alt_http_port:"},
		{"wildcard ok", acme(func(c *Config) { c.Wildcard = &WildcardConfig{Nameserver: "ns1.example.com:53"} }), ""},
		{"wildcard no port", acme(func(c *Config) { c.Wildcard = &WildcardConfig{Nameserver: "ns1.example.com"} }), "tls.wildcard.nameserver:"},
		{"wildcard half tsig", acme(func(c *Config) {
			c.Wildcard = &WildcardConfig{Nameserver: "ns:53", TSIGKeyName: "k"}
		}), "tls.wildcard.tsig_key_name:"},
		{"wildcard bad secret", acme(func(c *Config) {
			c.Wildcard = &WildcardConfig{Nameserver: "ns:53", TSIGKeyName: "k", TSIGSecret: "!!"}
		}), "tls.wildcard.tsig_secret:"},
		{"wildcard bad algorithm", acme(func(c *Config) {
			c.Wildcard = &WildcardConfig{Nameserver: "ns:53", TSIGAlgorithm: "hmac-md4"}
		}), "tls.wildcard.tsig_algorithm:"},
		{"internal no state dir", Config{Mode: ModeInternal, Domains: []string{"localhost"}}, "state_dir:"},
		{"files no cert", Config{Mode: ModeFiles, KeyFile: "k"}, "tls.cert_file:"},
		{"files no key", Config{Mode: ModeFiles, CertFile: "c"}, "tls.key_file:"},
		{"redirect off", Config{Mode: ModeFiles, CertFile: "c", KeyFile: "k", RedirectHTTP: &f}, ""},
		{"https port", Config{Mode: ModeFiles, CertFile: "c", KeyFile: "k", HTTPSPort: -1}, "listen.https:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one starting %q", err, tt.wantErr)
			}
			if tt.wantErr != "" {
				// The field is typed, for config loaders to find its line.
				field, _, _ := strings.Cut(tt.wantErr, ":")
				if fe, ok := errors.AsType[*FieldError](err); !ok || fe.Field != field {
					t.Fatalf("error %v: want a *FieldError for %s", err, field)
				}
			}
		})
	}
}

func TestDefaultMode(t *testing.T) {
	for _, tt := range []struct {
		domains []string
		want    Mode
	}{
		{[]string{"localhost"}, ModeInternal},
		{[]string{"LOCALHOST."}, ModeInternal},
		{[]string{"dev.localhost", "localhost"}, ModeInternal},
		{[]string{"localhost", "dev.example.com"}, ModeACME},
		{[]string{"dev.example.com"}, ModeACME},
	} {
		if got := DefaultMode(tt.domains); got != tt.want {
			t.Errorf("DefaultMode(%v) = %s, want %s", tt.domains, got, tt.want)
		}
	}
}

func TestHTTPHandler(t *testing.T) {
	fallback := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	})
	off := false
	tests := []struct {
		name      string
		cfg       Config
		host, uri string
		wantCode  int
		wantLoc   string
	}{
		{"redirect default port", Config{HTTPSPort: 443}, "a.localhost:8080", "/p?q=1", 308, "https://a.localhost/p?q=1"},
		{"redirect other port", Config{HTTPSPort: 8443}, "a.localhost", "/", 308, "https://a.localhost:8443/"},
		{"redirect ipv6", Config{}, "[::1]:80", "/x", 308, "https://[::1]/x"},
		{"redirect off", Config{RedirectHTTP: &off}, "a.localhost", "/", http.StatusTeapot, ""},
		{"off mode", Config{Mode: ModeOff}, "a.localhost", "/", http.StatusTeapot, ""},
		{"no host", Config{}, "", "/", http.StatusTeapot, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Domains = []string{"localhost"}
			cfg.StateDir = t.TempDir()
			m := newTestManager(t, cfg, nil)
			req := httptest.NewRequest(http.MethodGet, "http://x"+tt.uri, nil)
			req.Host = tt.host
			rec := httptest.NewRecorder()
			m.HTTPHandler(fallback).ServeHTTP(rec, req)
			if rec.Code != tt.wantCode || rec.Header().Get("Location") != tt.wantLoc {
				t.Fatalf("got %d %q, want %d %q", rec.Code, rec.Header().Get("Location"), tt.wantCode, tt.wantLoc)
			}
		})
	}
	m := newTestManager(t, Config{Mode: ModeOff}, nil)
	if m.TLSConfig() != nil || m.RootCertPath() != "" {
		t.Fatal("off mode has a TLS config or a root")
	}
}

func TestZapBridge(t *testing.T) {
	var buf lockedBuffer
	zl := newZapLogger(zerolog.New(&buf).Level(zerolog.InfoLevel))
	zl.Named("obtain").With(zap.String("identifier", "a.example.com")).Info("acquiring lock") // demoted to debug: dropped
	zl.Named("obtain").With(zap.String("identifier", "a.example.com")).Error("could not get certificate", zap.Int("attempt", 2))
	out := buf.String()
	if strings.Contains(out, "acquiring lock") {
		t.Errorf("certmagic info chatter passed at info level: %s", out)
	}
	for _, want := range []string{`"level":"error"`, `"logger":"certmagic.obtain"`, `"identifier":"a.example.com"`, `"attempt":2`, `"message":"could not get certificate"`} {
		if !strings.Contains(out, want) {
			t.Errorf("bridged entry lacks %s: %s", want, out)
		}
	}
}

// TestCloseStopsGoroutines checks that Close ends what New started:
// certmagic's cache maintenance in acme mode, the poller in files mode.
// Each New runs in a synctest bubble, which ends only once every goroutine
// started in it has exited, and fails the test naming any that stays
// blocked.
func TestCloseStopsGoroutines(t *testing.T) {
	ca := certstest.NewCA(t)
	dir := t.TempDir()
	certPEM, keyPEM, _ := ca.Leaf(t, "*."+testDomain)
	writeFile(t, filepath.Join(dir, "c.pem"), certPEM)
	writeFile(t, filepath.Join(dir, "k.pem"), keyPEM)
	for _, cfg := range []Config{
		{Mode: ModeACME, Domains: []string{testDomain}, StateDir: t.TempDir(), CA: "https://127.0.0.1:1/dir"},
		{Mode: ModeFiles, CertFile: filepath.Join(dir, "c.pem"), KeyFile: filepath.Join(dir, "k.pem")},
		{Mode: ModeInternal, Domains: []string{"localhost"}, StateDir: t.TempDir()},
	} {
		t.Run(string(cfg.Mode), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m, err := New(cfg, nil, zerolog.Nop())
				if err != nil {
					t.Fatal(err)
				}
				if err := m.Close(); err != nil {
					t.Fatal(err)
				}
				_ = m.Close() // idempotent
			})
		})
	}
}
