package access

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/envgate/envgate/netns/netnstest/wait"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

func mustNew(t *testing.T, cfg Config) *Policy {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func req(remote string, kv ...string) *http.Request {
	r := httptest.NewRequest("GET", "http://x.example.test/a?b=1", nil)
	r.RemoteAddr = remote
	for i := 0; i+1 < len(kv); i += 2 {
		r.Header.Add(kv[i], kv[i+1])
	}
	return r
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestNoRuleOpenOnLocalhostOnly(t *testing.T) {
	p := mustNew(t, Config{})
	if d := p.Check(req("127.0.0.1:1"), "a", true); d.Outcome != Allowed || !d.ShowOutput {
		t.Fatalf("localhost: %+v, want allowed with output", d)
	}
	if d := p.Check(req("127.0.0.1:1"), "a", false); d.Outcome != Refused || d.Status != 403 || d.Kind != "no_access" {
		t.Fatalf("public domain: %+v, want a 403", d)
	}
	if p.Covers("a") || !mustNew(t, Config{Rules: []Rule{{Match: "a*", AllowCIDRs: prefixes("10.0.0.0/8")}}}).Covers("ab") {
		t.Fatal("Covers")
	}
}

func TestCIDRAndTrustedProxies(t *testing.T) {
	p := mustNew(t, Config{
		Rules:          []Rule{{Match: "pr-*", AllowCIDRs: prefixes("192.0.2.0/24")}},
		TrustedProxies: prefixes("10.0.0.0/8"),
	})
	for _, tc := range []struct {
		name, remote, xff string
		env               string
		want              Outcome
	}{
		{"allowed address", "192.0.2.7:5", "", "pr-1", Allowed},
		{"mapped address", "[::ffff:192.0.2.7]:5", "", "pr-1", Allowed},
		{"other address", "198.51.100.1:5", "", "pr-1", Refused},
		{"forged XFF from a stranger", "198.51.100.1:5", "192.0.2.7", "pr-1", Refused},
		{"through a trusted proxy", "10.1.1.1:5", "192.0.2.7", "pr-1", Allowed},
		{"trusted proxy chain", "10.1.1.1:5", "198.51.100.9, 192.0.2.7, 10.2.2.2", "pr-1", Allowed},
		{"client spoofs left of the real one", "10.1.1.1:5", "192.0.2.7, 198.51.100.9", "pr-1", Refused},
		{"no rule on public domain", "192.0.2.7:5", "", "main", Refused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := req(tc.remote)
			if tc.xff != "" {
				r.Header.Set("X-Forwarded-For", tc.xff)
			}
			if d := p.Check(r, tc.env, false); d.Outcome != tc.want {
				t.Fatalf("%+v, want outcome %d", d, tc.want)
			}
		})
	}
}

func writeHtpasswd(t *testing.T, path string, users ...string) {
	t.Helper()
	var b strings.Builder
	for i := 0; i+1 < len(users); i += 2 {
		h, err := bcrypt.GenerateFromPassword([]byte(users[i+1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(users[i] + ":" + string(h) + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestBasicAndReload runs in a synctest bubble: the file is looked at
// again once a second has passed on the bubble's clock, which the polls
// move on without waiting in real time.
func TestBasicAndReload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "htpasswd")
		writeHtpasswd(t, file, "alice", "wonder")
		var logs bytes.Buffer // written by Check, on this goroutine
		p := mustNew(t, Config{Rules: []Rule{{Basic: &Basic{HtpasswdFile: file}}}, Log: zerolog.New(&logs)})
		basic := func(u, pw string) *http.Request {
			r := req("198.51.100.1:5", UserHeader, "mallory", "X-Auth-Request-User", "x")
			r.SetBasicAuth(u, pw)
			return r
		}
		d := p.Check(req("198.51.100.1:5"), "a", false)
		if d.Outcome != Refused || d.Status != 401 || !strings.HasPrefix(d.Challenge, "Basic ") {
			t.Fatalf("anonymous: %+v, want 401 with a challenge", d)
		}
		if d := p.Check(basic("alice", "nope"), "a", false); d.Status != 401 {
			t.Fatalf("wrong password: %+v", d)
		}
		r := basic("alice", "wonder")
		d = p.Check(r, "a", false)
		if d.Outcome != Allowed || d.ShowOutput {
			t.Fatalf("alice: %+v, want allowed without output (public domain)", d)
		}
		d.Apply(r.Header)
		if r.Header.Get(UserHeader) != "alice" || r.Header.Get("Authorization") != "" {
			t.Fatalf("env request header %v: want the user, and no password", r.Header)
		}

		// A new user: seen once the file is looked at again (at most a
		// second later), without a new Policy.
		writeHtpasswd(t, file, "alice", "wonder", "bob", "builder")
		wait.For(t, 5*time.Second, "bob admitted after the file changed", func() bool {
			return p.Check(basic("bob", "builder"), "a", false).Outcome == Allowed
		})
		if strings.Contains(logs.String(), "htpasswd unreadable") {
			t.Fatalf("a good file logged as unreadable: %s", logs.String())
		}
		// A broken file keeps the users read before.
		os.WriteFile(file, []byte("carol:{SHA}abc\n"), 0o600)
		wait.For(t, 5*time.Second, "the malformed file to be read", func() bool {
			d = p.Check(basic("bob", "builder"), "a", false)
			return strings.Contains(logs.String(), "htpasswd unreadable")
		})
		if d.Outcome != Allowed {
			t.Fatalf("after a malformed file: %+v", d)
		}
		if d := p.Check(basic("bob", "builder"), "a", false); d.Outcome != Allowed {
			t.Fatalf("after a malformed file, later: %+v", d)
		}

		if _, err := New(Config{Rules: []Rule{{Basic: &Basic{HtpasswdFile: file}}}}); err == nil || !strings.Contains(err.Error(), "bcrypt") {
			t.Fatalf("non-bcrypt hash: %v, want an error that says bcrypt", err)
		}
	})
}

// authServer behaves like oauth2-proxy's /oauth2/auth: 202 with user
// headers for the session cookie, 401 without it, and a 302 to its login
// page when the client is a browser (Accept: text/html).
func authServer(t *testing.T) (*httptest.Server, *http.Header) {
	var seen http.Header
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
		if c, err := r.Cookie("_oauth2_proxy"); err == nil && c.Value == "good" {
			w.Header().Set("X-Auth-Request-User", "alice")
			w.Header().Set("X-Auth-Request-Email", "alice@example.test")
			w.WriteHeader(http.StatusAccepted)
			return
		}
		if strings.Contains(r.Header.Get("Accept"), "text/html") {
			w.Header().Set("Location", "https://auth.example.test/oauth2/start?rd="+r.Header.Get("X-Forwarded-Host")+r.Header.Get("X-Forwarded-Uri"))
			w.Header().Add("Set-Cookie", "_oauth2_proxy_csrf=x; Path=/")
			w.WriteHeader(http.StatusFound)
			return
		}
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
	}))
	t.Cleanup(s.Close)
	return s, &seen
}

func TestForwardAuth(t *testing.T) {
	s, seen := authServer(t)
	show := true
	p := mustNew(t, Config{Rules: []Rule{{ForwardAuth: &ForwardAuth{URL: s.URL + "/oauth2/auth",
		CopyHeaders: []string{"x-auth-request-user", "X-Auth-Request-Email"}}, ShowOutput: &show}}})

	d := p.Check(req("198.51.100.1:5"), "a", false)
	if d.Outcome != Replied || d.Reply.Status != 401 || !strings.Contains(string(d.Reply.Body), "Unauthorized") {
		t.Fatalf("anonymous API client: %+v, want the service's 401", d)
	}
	d = p.Check(req("198.51.100.1:5", "Accept", "text/html"), "a", false)
	if d.Outcome != Replied || d.Reply.Status != 302 || !strings.Contains(d.Reply.Header.Get("Location"), "rd=x.example.test/a?b=1") ||
		d.Reply.Header.Get("Set-Cookie") == "" {
		t.Fatalf("anonymous browser: %+v, want the service's 302 with its cookie", d)
	}

	r := req("198.51.100.1:5", "Cookie", "_oauth2_proxy=good", "X-Auth-Request-User", "mallory", "X-Auth-Request-Email", "m@evil.test")
	r.Method = "DELETE"
	d = p.Check(r, "a", false)
	if d.Outcome != Allowed || !d.ShowOutput {
		t.Fatalf("signed in: %+v", d)
	}
	for k, want := range map[string]string{"X-Forwarded-Method": "DELETE", "X-Forwarded-Host": "x.example.test",
		"X-Forwarded-Uri": "/a?b=1", "X-Forwarded-Proto": "http", "X-Forwarded-For": "198.51.100.1", "Cookie": "_oauth2_proxy=good"} {
		if got := seen.Get(k); got != want {
			t.Errorf("auth request %s = %q, want %q", k, got, want)
		}
	}
	d.Apply(r.Header)
	if u, e := r.Header.Values("X-Auth-Request-User"), r.Header.Values("X-Auth-Request-Email"); len(u) != 1 || u[0] != "alice" || len(e) != 1 || e[0] != "alice@example.test" {
		t.Fatalf("env gets user %q, email %q: want only the service's", u, e)
	}

	// Unreachable service: a 502, nothing let through.
	s.Close()
	if d := p.Check(req("198.51.100.1:5", "Cookie", "_oauth2_proxy=good"), "a", false); d.Outcome != Refused || d.Status != 502 {
		t.Fatalf("service down: %+v", d)
	}
}

func TestConnOnlyByCIDR(t *testing.T) {
	file := filepath.Join(t.TempDir(), "htpasswd")
	writeHtpasswd(t, file, "alice", "wonder")
	p := mustNew(t, Config{Rules: []Rule{{Match: "db-*", AllowCIDRs: prefixes("127.0.0.0/8"), Basic: &Basic{HtpasswdFile: file}}}})
	lo, other := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.0.2.1")
	if err := p.CheckConn(lo, "db-1", false); err != nil {
		t.Fatal(err)
	}
	if err := p.CheckConn(other, "db-1", false); err == nil {
		t.Fatal("a connection from outside the CIDRs got in where only basic auth could admit it")
	}
	if err := p.CheckConn(other, "web", true); err != nil {
		t.Fatalf("no rule on localhost: %v", err)
	}
	if err := p.CheckConn(lo, "web", false); err == nil {
		t.Fatal("no rule on a public domain let a connection in")
	}
}

func TestShareLink(t *testing.T) {
	dir := t.TempDir()
	k, err := LoadShareKey(filepath.Join(dir, "share.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "share.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	k2, err := LoadShareKey(filepath.Join(dir, "share.key"))
	if err != nil {
		t.Fatal(err)
	}
	tok := k.Token("pr-1", time.Now().Add(time.Hour))
	if _, ok := k2.Verify("pr-1", tok); !ok {
		t.Fatal("token refused by the key read back")
	}
	if _, ok := k.Verify("pr-2", tok); ok {
		t.Fatal("token for pr-1 admits pr-2")
	}
	if _, ok := k.Verify("pr-1", k.Token("pr-1", time.Now().Add(-time.Second))); ok {
		t.Fatal("expired token admitted")
	}
	if _, ok := k.Verify("pr-1", "9999999999."+strings.Repeat("A", 43)); ok {
		t.Fatal("forged token admitted")
	}
	p := mustNew(t, Config{Rules: []Rule{{AllowCIDRs: prefixes("192.0.2.0/24")}}, Shares: k})
	c := p.RedeemShare("pr-1", tok, true)
	if c == nil || c.Domain != "" || !c.Secure || !c.HttpOnly {
		t.Fatalf("cookie %+v: want a host-only, secure, HttpOnly one", c)
	}
	r := req("198.51.100.1:5")
	r.AddCookie(c)
	if d := p.Check(r, "pr-1", false); d.Outcome != Allowed {
		t.Fatalf("share cookie holder: %+v", d)
	}
	if d := p.Check(r, "pr-2", false); d.Outcome == Allowed {
		t.Fatal("share cookie of pr-1 admits to pr-2")
	}
	// A share for an env named like the dashboard's label must not open
	// the dashboard.
	dash := k.Token("envgate", time.Now().Add(time.Hour))
	r = req("198.51.100.1:5")
	r.AddCookie(p.RedeemShare("envgate", dash, true))
	if d := p.Check(r, "envgate", false); d.Outcome != Allowed {
		t.Fatalf("share cookie holder of env envgate: %+v", d)
	}
	if d := p.CheckOperator(r, "envgate", false); d.Outcome == Allowed {
		t.Fatal("a share cookie opens the dashboard")
	}
	if d := p.CheckOperator(req("192.0.2.7:5"), "envgate", false); d.Outcome != Allowed {
		t.Fatalf("allowed address at the dashboard: %+v", d)
	}
}

func TestRulesAreChecked(t *testing.T) {
	for _, r := range []Rule{
		{Match: "["},
		{Match: "*"},
		{AllowCIDRs: prefixes("10.0.0.0/8"), Basic: &Basic{HtpasswdFile: "/x"}, ForwardAuth: &ForwardAuth{URL: "http://a"}},
		{ForwardAuth: &ForwardAuth{URL: "ftp://a"}},
		{Basic: &Basic{HtpasswdFile: "/nonexistent/htpasswd"}},
	} {
		if _, err := New(Config{Rules: []Rule{r}}); err == nil {
			t.Errorf("rule %+v accepted", r)
		}
	}
}

// The warm path: no rules, a localhost request, no allocation.
func TestCheckOpenAllocs(t *testing.T) {
	p := mustNew(t, Config{})
	r := req("127.0.0.1:1")
	if n := testing.AllocsPerRun(100, func() {
		d := p.Check(r, "a", true)
		d.Apply(r.Header)
	}); n != 0 {
		t.Fatalf("%v allocations per open check, want 0", n)
	}
}

func FuzzClientAddr(f *testing.F) {
	f.Add("10.0.0.1:1", "192.0.2.1, 10.0.0.2")
	f.Add("10.0.0.1:1", ",,, ,")
	trusted := prefixes("10.0.0.0/8")
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := &http.Request{RemoteAddr: remote, Header: http.Header{"X-Forwarded-For": {xff}}}
		a := ClientAddr(r, trusted)
		if a.IsValid() && a.Zone() != "" {
			t.Fatalf("zone kept: %v", a)
		}
	})
}

func BenchmarkCheck(b *testing.B) {
	open := mustNew(&testing.T{}, Config{})
	cidr := mustNew(&testing.T{}, Config{Rules: []Rule{{Match: "pr-*", AllowCIDRs: prefixes("10.0.0.0/8")}, {AllowCIDRs: prefixes("127.0.0.0/8")}}})
	r := req("127.0.0.1:1234")
	b.Run("open-localhost", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			d := open.Check(r, "main", true)
			d.Apply(r.Header)
		}
	})
	b.Run("cidr", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			d := cidr.Check(r, "main", false)
			d.Apply(r.Header)
		}
	})
}
