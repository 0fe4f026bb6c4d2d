package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// publicTemplate is a template for configs on a public domain, where the
// demo template does not fill in; publicBasics adds tls off, so that the
// default source (any) needs no wildcard. pubDomain is a public domain
// with access control, which source any needs there.
const (
	publicTemplate = "templates: [{name: web, command: [\"true\"], port: 3000, user: nobody}]\n"
	publicBasics   = "tls: {mode: \"off\"}\n" + publicTemplate
	pubDomain      = "domains: [dev.example.com]\naccess: [{allow_cidrs: [10.0.0.0/8]}]\n"
)

// Issue 13's config errors name the file, the line and the field.
func TestConfigSafetyErrorsNameFileLineField(t *testing.T) {
	const acme = pubDomain + "tls:\n  mode: acme\n"
	for _, tc := range []struct {
		name, yaml string
		want       []string // "" : loads
	}{
		{"no templates on a public domain", pubDomain + "tls: {mode: \"off\"}\n",
			[]string{":1: templates: no templates: envs under dev.example.com need at least one"}},
		{"empty templates on a public domain", pubDomain + "tls: {mode: \"off\"}\ntemplates: []\n",
			[]string{":4: templates: no templates"}},
		{"no templates on localhost: the demo", "domains: [localhost]\n", nil},
		{"per-name ACME with source any by default", acme + publicTemplate,
			[]string{":4: source.kind: any allows every valid name", "tls.wildcard", "list, dir or git"}},
		{"per-name ACME with source any", acme + publicTemplate + "source:\n  kind: any\n",
			[]string{":7: source.kind: any allows every valid name"}},
		{"per-name ACME with a list", acme + publicTemplate + "source: {kind: list, names: [main]}\n", nil},
		{"wildcard with source any", acme + "  wildcard: {nameserver: \"ns:53\"}\n" + publicTemplate, nil},
		{"internal with source any", pubDomain + "tls: {mode: internal}\n" + publicTemplate, nil},
		{"weekly cap below -1", acme + "  max_orders_per_week: -2\n  wildcard: {nameserver: \"ns:53\"}\n" + publicTemplate,
			[]string{":5: tls.max_orders_per_week: -2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadString(t, tc.yaml)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range append(tc.want, "envgate.yaml") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestConfigWeeklyCapMapsToCerts(t *testing.T) {
	c := load(t, pubDomain+"tls:\n  max_orders_per_week: 12\n  wildcard: {nameserver: \"ns:53\"}\n"+publicTemplate)
	if cc := c.certsConfig(); cc.MaxOrdersPerWeek != 12 || !cc.AnyEnv {
		t.Fatalf("certs config %+v: want max 12 a week, AnyEnv", cc)
	}
	c = load(t, pubDomain+"source: {kind: list, names: [a]}\n"+publicTemplate)
	if cc := c.certsConfig(); cc.AnyEnv || cc.MaxOrdersPerWeek != 0 {
		t.Fatalf("certs config %+v: want AnyEnv false, the default cap (0: certs' 40)", cc)
	}
}

func writeSecret(t *testing.T, value string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(value), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return p
}

// loadMode writes yaml with mode and loads it.
func loadMode(t *testing.T, yaml string, mode os.FileMode) (*Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "envgate.yaml")
	if err := os.WriteFile(path, []byte(yaml), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return LoadConfig(path)
}

func TestConfigSecretFiles(t *testing.T) {
	const base = pubDomain + publicTemplate + "tls:\n  mode: acme\n"
	tsig := writeSecret(t, "c2VjcmV0LXRzaWcta2V5\n", 0o600)
	mac := writeSecret(t, "  c2VjcmV0LWtleQ\n", 0o600)
	c := load(t, base+"  eab: {key_id: kid, mac_key_file: "+mac+"}\n  wildcard:\n    nameserver: ns:53\n    tsig_key_name: k\n    tsig_secret_file: "+tsig+"\n")
	cc := c.certsConfig()
	if cc.Wildcard.TSIGSecret != "c2VjcmV0LXRzaWcta2V5" || cc.EAB.MACKey != "c2VjcmV0LWtleQ" {
		t.Fatalf("secrets from files: tsig %q, mac %q", cc.Wildcard.TSIGSecret, cc.EAB.MACKey)
	}
	if w := c.secretWarnings(); len(w) != 0 {
		t.Fatalf("warnings for 0600 files: %q", w)
	}

	for _, tc := range []struct{ name, yaml, want string }{
		{"both", base + "  wildcard:\n    nameserver: ns:53\n    tsig_key_name: k\n    tsig_secret: c2VjcmV0\n    tsig_secret_file: " + tsig + "\n",
			":10: tls.wildcard.tsig_secret_file: set tsig_secret or tsig_secret_file, not both"},
		{"missing", base + "  eab: {key_id: kid, mac_key_file: /nonexistent/mac}\n", ":6: tls.eab.mac_key_file: open /nonexistent/mac"},
		{"empty", base + "  eab: {key_id: kid, mac_key_file: " + writeSecret(t, "\n", 0o600) + "}\n", ":6: tls.eab.mac_key_file:"},
		{"not base64", base + "  wildcard:\n    nameserver: ns:53\n    tsig_key_name: k\n    tsig_secret_file: " + writeSecret(t, "!!", 0o600) + "\n",
			"tls.wildcard.tsig_secret: not base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadString(t, tc.yaml)
			if err == nil || !strings.Contains(err.Error(), "envgate.yaml") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want one naming the file and containing %q", err, tc.want)
			}
		})
	}
}

// config --check warns when secrets can be read by other users: a config
// holding one inline, or a *_file, readable by group or others.
func TestConfigSecretWarnings(t *testing.T) {
	const base = pubDomain + publicTemplate + "tls:\n  mode: acme\n  wildcard:\n    nameserver: ns:53\n    tsig_key_name: k\n"
	inline := base + "    tsig_secret: c2VjcmV0\n  eab: {key_id: kid, mac_key: c2VjcmV0LWtleQ}\n"

	c, err := loadMode(t, inline, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	w := c.secretWarnings()
	if len(w) != 1 || !strings.Contains(w[0], "envgate.yaml holds secrets (tls.wildcard.tsig_secret, tls.eab.mac_key)") ||
		!strings.Contains(w[0], "mode 0644") || !strings.Contains(w[0], "tsig_secret_file") {
		t.Fatalf("warnings %q", w)
	}
	if c, err = loadMode(t, inline, 0o640); err != nil || len(c.secretWarnings()) != 1 {
		t.Fatalf("group-readable config: %v, %q; want a warning", err, c.secretWarnings())
	}
	if c, err = loadMode(t, inline, 0o600); err != nil || len(c.secretWarnings()) != 0 {
		t.Fatalf("0600 config: %v, %q; want no warning", err, c.secretWarnings())
	}
	// No secret inline: a world-readable config is fine, its secret file is not.
	c, err = loadMode(t, base+"    tsig_secret_file: "+writeSecret(t, "c2VjcmV0", 0o644)+"\n", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	w = c.secretWarnings()
	if len(w) != 1 || !strings.Contains(w[0], "envgate.yaml:9: tls.wildcard.tsig_secret_file:") || !strings.Contains(w[0], "readable by group or others") {
		t.Fatalf("warnings %q", w)
	}
	// The private key of files mode, likewise.
	c, err = loadMode(t, pubDomain+publicTemplate+"tls: {mode: files, cert_file: /c.pem, key_file: "+writeSecret(t, "key", 0o604)+"}\n", 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if w = c.secretWarnings(); len(w) != 1 || !strings.Contains(w[0], "tls.key_file:") {
		t.Fatalf("warnings %q", w)
	}
}

func TestConfigCheckPrintsSecretWarnings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "envgate.yaml")
	yaml := pubDomain + publicTemplate + "tls:\n  eab: {key_id: kid, mac_key: c2VjcmV0LWtleQ}\n  wildcard: {nameserver: \"ns:53\"}\n"
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	r := newRootCmd()
	var out, errOut bytes.Buffer
	r.SetOut(&out)
	r.SetErr(&errOut)
	r.SetArgs([]string{"--config", path, "config", "--check"})
	if err := r.Execute(); err != nil {
		t.Fatal(err)
	}
	if out.String() != "ok\n" || !strings.Contains(errOut.String(), "warning: "+path+" holds secrets (tls.eab.mac_key)") {
		t.Fatalf("stdout %q, stderr %q", out.String(), errOut.String())
	}
}
