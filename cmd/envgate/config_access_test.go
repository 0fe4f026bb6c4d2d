package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

func TestConfigAccess(t *testing.T) {
	users := filepath.Join(t.TempDir(), "htpasswd")
	h, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err := os.WriteFile(users, []byte("alice:"+string(h)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := load(t, `domains: [dev.example.com]
tls: {mode: internal}
state_dir: `+t.TempDir()+`
access:
  - match: "pr-*"
    allow_cidrs: [10.0.0.0/8, "2001:db8::1"]
    basic: {htpasswd_file: `+users+`}
    show_output: true
  - forward_auth: {url: "http://127.0.0.1:4180/oauth2/auth", copy_headers: [X-Auth-Request-User], timeout: 2s}
limits: {new_envs_per_client: 5/10s}
templates:
  - name: web
    command: [x]
    port: 3000
    user: nobody
    cookies: {shared_domain: true}
`)
	if c.Limits.MaxEnvs != maxEnvsDefault {
		t.Errorf("max_envs %d on a public domain, want the default %d", c.Limits.MaxEnvs, maxEnvsDefault)
	}
	if n, per, local, err := c.newEnvsPerClient(); n != 5 || per != 10*time.Second || !local || err != nil {
		t.Errorf("new_envs_per_client: %d/%v local %v %v", n, per, local, err)
	}
	if c.newEnvLimit() == nil {
		t.Error("no new-env limit")
	}
	if _, err := c.accessPolicy(zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if gs := c.gatewayTemplates(); !gs[c.Templates[0].Name].SharedDomainCookies {
		t.Fatalf("cookies.shared_domain not passed on: %+v", gs)
	}

	// localhost: no cap but the pool, no per-client limit; an explicit 0
	// stays 0 elsewhere.
	l := load(t, "domains: [localhost]\n")
	if l.Limits.MaxEnvs != 0 || l.newEnvLimit() != nil {
		t.Errorf("localhost defaults: max_envs %d, limit %v", l.Limits.MaxEnvs, l.newEnvLimit())
	}
	z := load(t, pub+"access: [{allow_cidrs: [10.0.0.0/8]}]\nlimits: {max_envs: 0}\n"+pubTail)
	if z.Limits.MaxEnvs != 0 || z.newEnvLimit() == nil {
		t.Errorf("explicit max_envs 0: %d; default limit on a public domain: %v", z.Limits.MaxEnvs, z.newEnvLimit())
	}
	if o := load(t, pub+"access: [{allow_cidrs: [10.0.0.0/8]}]\nlimits: {new_envs_per_client: \"off\"}\n"+pubTail); o.newEnvLimit() != nil {
		t.Error("new_envs_per_client off still limits")
	}
}

// pub starts a config for a public domain; pubTail, after the keys a
// test adds, ends it.
const (
	pub     = "domains: [x.test]\n"
	pubTail = "tls: {mode: internal}\ntemplates: [{name: a, command: [x], port: 1, user: nobody}]\n"
)

// Access errors name the file, the line and the field.
func TestConfigAccessErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"open public domain", pub, `:1: domains[0]: "x.test" is not a localhost domain: with source kind any`},
		{"bad cidr", pub + "access:\n  - allow_cidrs: [10.0.0.0/33]\n", ":3: access[0].allow_cidrs[0]:"},
		{"nobody", pub + "access:\n  - match: \"pr-*\"\n", ":3: access[0].match: this entry lets nobody in"},
		{"bad glob", pub + "access:\n  - match: \"[\"\n    allow_cidrs: [10.0.0.0/8]\n", ":3: access[0].match:"},
		{"both", pub + "access:\n  - basic: {htpasswd_file: /x}\n    forward_auth: {url: \"http://a\"}\n", ":3: access[0].basic: set basic or forward_auth, not both"},
		{"relative htpasswd", pub + "access:\n  - basic: {htpasswd_file: htpasswd}\n", ":3: access[0].basic.htpasswd_file:"},
		{"missing htpasswd", pub + "access:\n  - basic: {htpasswd_file: /nonexistent/htpasswd}\n", ":3: access[0].basic.htpasswd_file:"},
		{"bad url", pub + "access:\n  - forward_auth:\n      url: ftp://a\n", ":4: access[0].forward_auth.url:"},
		{"bad header", pub + "access:\n  - forward_auth:\n      url: http://a\n      copy_headers: [\"X User\"]\n", ":5: access[0].forward_auth.copy_headers[0]:"},
		{"unknown key", pub + "access:\n  - allow_cidr: [10.0.0.0/8]\n", ":3: allow_cidr: unknown key"},
		{"bad rate", "limits:\n  new_envs_per_client: lots\n", `:2: limits.new_envs_per_client: "lots"`},
		{"zero rate", "limits:\n  new_envs_per_client: 0/1m\n", ":2: limits.new_envs_per_client:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadString(t, tc.yaml+pubTail)
			if err == nil || !strings.Contains(err.Error(), "envgate.yaml"+tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, "envgate.yaml"+tc.want)
			}
		})
	}
	// A public domain with a closed source is fine without access:
	// every request there is refused until access: says otherwise.
	if _, err := loadString(t, pub+"source: {kind: list, names: [main]}\n"+pubTail); err != nil {
		t.Fatal(err)
	}
}
