package gateway_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/gateway/access"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/envgate/envgate/loadtest/demo"
	"github.com/envgate/envgate/netns/netnstest/wait"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

// loopbackAccess admits clients on loopback to every env: what tests on a
// domain other than localhost, which is closed without access rules, need.
func loopbackAccess(t *testing.T) *access.Policy {
	t.Helper()
	p, err := access.New(access.Config{Rules: []access.Rule{{AllowCIDRs: []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func writeUsers(t *testing.T, path string, users ...string) {
	t.Helper()
	var b strings.Builder
	for i := 0; i+1 < len(users); i += 2 {
		h, err := bcrypt.GenerateFromPassword([]byte(users[i+1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%s\n", users[i], h)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// oauth2Proxy behaves like oauth2-proxy's /oauth2/auth endpoint: the
// session cookie gets a 202 with the user's headers; without it, a
// browser (Accept: text/html) is sent to the login page, anything else
// gets a 401.
func oauth2Proxy(t *testing.T) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := r.Cookie("_oauth2_proxy"); err == nil && c.Value == "session-alice" {
			w.Header().Set("X-Auth-Request-User", "alice")
			w.Header().Set("X-Auth-Request-Email", "alice@example.test")
			w.WriteHeader(http.StatusAccepted)
			return
		}
		if strings.Contains(r.Header.Get("Accept"), "text/html") {
			rd := r.Header.Get("X-Forwarded-Proto") + "://" + r.Header.Get("X-Forwarded-Host") + r.Header.Get("X-Forwarded-Uri")
			http.Redirect(w, r, "https://login.example.test/oauth2/start?rd="+url.QueryEscape(rd), http.StatusFound)
			return
		}
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
	}))
	t.Cleanup(s.Close)
	return s
}

func (g *gw) do(t *testing.T, method, host, path string, body io.Reader, kv ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+host+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Add(kv[i], kv[i+1])
	}
	c := *g.Client // redirects are for the test to see
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// assertNothingMade checks that no env was created for names: no
// sandbox, no entry in the manager, no data dir; with a fake manager, no
// Acquire.
func (g *gw) assertNothingMade(t *testing.T, names ...string) {
	t.Helper()
	if g.Fake != nil {
		for _, n := range g.Fake.acquired() {
			if slices.Contains(names, n) {
				t.Errorf("env %s acquired for refused requests only", n)
			}
		}
		return
	}
	if n := g.Net.Creates.Load(); n != 0 {
		t.Errorf("%d namespaces created for refused clients", n)
	}
	for _, n := range names {
		if g.Envs.Known(n) {
			t.Errorf("env %s has an entry after refused requests only", n)
		}
		if _, err := os.Stat(filepath.Join(g.DataDir, n)); err == nil {
			t.Errorf("env %s has a data dir after refused requests only", n)
		}
	}
}

// TestAccessModes is issue 13's test 1: anonymous clients get exactly
// what each access mode says and make nothing; authorised ones reach the
// env with the user in a header; a new htpasswd user works without a
// restart.
func TestAccessModes(t *testing.T) {
	users := filepath.Join(t.TempDir(), "htpasswd")
	writeUsers(t, users, "alice", "wonder")
	auth := oauth2Proxy(t)
	shares, err := access.LoadShareKey(filepath.Join(t.TempDir(), access.ShareKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	policy, err := access.New(access.Config{Shares: shares, Rules: []access.Rule{
		{Match: "office-*", AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}},
		{Match: "basic-*", Basic: &access.Basic{HtpasswdFile: users}},
		{Match: "sso-*", ForwardAuth: &access.ForwardAuth{URL: auth.URL + "/oauth2/auth",
			CopyHeaders: []string{"X-Auth-Request-User", "X-Auth-Request-Email"}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	g := startFake(t, gwOptions{Domains: []string{testDomain}, Config: func(c *gateway.Config) { c.Access = policy }},
		func(string) *fakeEnv { return &fakeEnv{} })
	host := func(env string) string { return env + "." + testDomain }
	html := []string{"Accept", "text/html"}

	t.Run("anonymous", func(t *testing.T) {
		for _, tc := range []struct {
			env     string
			headers []string
			status  int
			check   func(*http.Response, []byte) string
		}{
			{"office-1", nil, 403, nil},
			{"nobody-1", nil, 403, func(_ *http.Response, b []byte) string {
				if !strings.Contains(string(b), "no_access") {
					return "a 403 page that does not say no rule admits anyone"
				}
				return ""
			}},
			{"basic-1", nil, 401, func(r *http.Response, _ []byte) string {
				if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Basic ") {
					return "no Basic challenge"
				}
				return ""
			}},
			{"basic-1", []string{"Authorization", "Basic YWxpY2U6bm9wZQ=="}, 401, nil}, // alice:nope
			{"sso-1", nil, 401, func(_ *http.Response, b []byte) string {
				if !strings.Contains(string(b), "Unauthorized") {
					return "not the service's own 401"
				}
				return ""
			}},
			{"sso-1", html, 302, func(r *http.Response, _ []byte) string {
				if want := "https://login.example.test/oauth2/start?rd=" + url.QueryEscape("http://sso-1."+testDomain+"/some/page?x=1"); r.Header.Get("Location") != want {
					return "Location " + r.Header.Get("Location") + ", want " + want
				}
				return ""
			}},
		} {
			// A WebSocket upgrade and a POST (the ReverseProxy path)
			// are refused alike.
			for _, m := range []string{"GET", "POST", "WS"} {
				var resp *http.Response
				var body []byte
				switch m {
				case "WS":
					resp, body = g.do(t, "GET", host(tc.env), "/some/page?x=1", nil, append([]string{"Connection", "Upgrade", "Upgrade", "websocket",
						"Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}, tc.headers...)...)
				case "POST":
					resp, body = g.do(t, "POST", host(tc.env), "/some/page?x=1", strings.NewReader("x"), tc.headers...)
				default:
					resp, body = g.do(t, "GET", host(tc.env), "/some/page?x=1", nil, tc.headers...)
				}
				if resp.StatusCode != tc.status {
					t.Errorf("%s %s %v: %d %s, want %d", m, tc.env, tc.headers, resp.StatusCode, body, tc.status)
					continue
				}
				if tc.check != nil {
					if msg := tc.check(resp, body); msg != "" {
						t.Errorf("%s %s %v: %s", m, tc.env, tc.headers, msg)
					}
				}
			}
		}
		g.assertNothingMade(t, "office-1", "nobody-1", "basic-1", "sso-1")
	})

	echo := func(t *testing.T, method, env string, kv ...string) demo.EchoResponse {
		t.Helper()
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader("payload")
		}
		resp, b := g.do(t, method, host(env), "/echo", body, kv...)
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s as authorised: %d %s", method, env, resp.StatusCode, b)
		}
		var e demo.EchoResponse
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		return e
	}
	t.Run("basic", func(t *testing.T) {
		for _, m := range []string{"GET", "POST"} { // direct path, ReverseProxy path
			e := echo(t, m, "basic-1", "Authorization", "Basic YWxpY2U6d29uZGVy", // alice:wonder
				access.UserHeader, "mallory")
			if u := e.Headers[access.UserHeader]; len(u) != 1 || u[0] != "alice" {
				t.Errorf("%s: env got %s %q, want alice only", m, access.UserHeader, u)
			}
			if a := e.Headers["Authorization"]; len(a) != 0 {
				t.Errorf("%s: env got the password: %q", m, a)
			}
		}
		// bob, added to the file while the gateway runs, gets in once
		// the file is looked at again (at most a second later).
		writeUsers(t, users, "alice", "wonder", "bob", "builder")
		var code int
		if !wait.Until(15*time.Second, func() bool {
			resp, _ := g.do(t, "GET", host("basic-1"), "/echo", nil, "Authorization", "Basic Ym9iOmJ1aWxkZXI=") // bob:builder
			code = resp.StatusCode
			return code == 200
		}) {
			t.Fatalf("bob still gets %d 15s after being added", code)
		}
	})
	t.Run("share link", func(t *testing.T) {
		tok := shares.Token("basic-2", time.Now().Add(time.Hour))
		if resp, _ := g.do(t, "GET", host("basic-2"), access.SharePath+"x"+tok, nil); resp.StatusCode != 403 {
			t.Fatalf("bad token: %d, want 403", resp.StatusCode)
		}
		resp, _ := g.do(t, "GET", host("basic-2"), access.SharePath+tok, nil)
		cookies := resp.Cookies()
		if resp.StatusCode != 302 || resp.Header.Get("Location") != "/" || len(cookies) != 1 || cookies[0].Domain != "" {
			t.Fatalf("share link: %d %v, want a 302 to / with one host-only cookie", resp.StatusCode, resp.Header)
		}
		c := cookies[0].Name + "=" + cookies[0].Value
		if resp, b := g.do(t, "GET", host("basic-2"), "/echo", nil, "Cookie", c); resp.StatusCode != 200 {
			t.Fatalf("with the share cookie: %d %s", resp.StatusCode, b)
		}
		if resp, _ := g.do(t, "GET", host("basic-3"), "/echo", nil, "Cookie", c); resp.StatusCode != 401 {
			t.Fatalf("share cookie of basic-2 on basic-3: %d, want 401", resp.StatusCode)
		}
	})
	t.Run("forward_auth", func(t *testing.T) {
		for _, m := range []string{"GET", "POST"} {
			e := echo(t, m, "sso-1", "Cookie", "_oauth2_proxy=session-alice",
				"X-Auth-Request-User", "mallory", "X-Auth-Request-Email", "mallory@evil.test")
			if u := e.Headers["X-Auth-Request-User"]; len(u) != 1 || u[0] != "alice" {
				t.Errorf("%s: env got user %q, want alice only", m, u)
			}
			if u := e.Headers["X-Auth-Request-Email"]; len(u) != 1 || u[0] != "alice@example.test" {
				t.Errorf("%s: env got email %q", m, u)
			}
		}
	})
}

func (g *gw) statusAt(t *testing.T, host string, kv ...string) startStatus {
	t.Helper()
	resp, b := g.do(t, "GET", host, gateway.StatusPath, nil, kv...)
	if resp.StatusCode != 200 {
		t.Fatalf("status of %s: %d %s", host, resp.StatusCode, b)
	}
	var s startStatus
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return s
}

// TestStatusOutputPrivate is issue 13's test 2: /_envgate/status tells
// anonymous clients the state of a running, a failed and a starting env,
// and never a line of output; the authorised client sees the output.
func TestStatusOutputPrivate(t *testing.T) {
	// Each env's output holds a secret: fail-* fails its start, slow-*
	// starts until the test ends, the others run.
	slowStarted, slowWaiting := make(chan struct{}), make(chan struct{}, 1)
	blocking := gateway.TemplateSettings{}
	for _, name := range []string{"failx", "slowx", "x"} {
		blocking[name] = gateway.EnvSettings{Waiting: gateway.WaitBlock}
	}
	envs := func(name string) *fakeEnv {
		switch {
		case strings.HasPrefix(name, "fail-"):
			out := []string{"reset link: token=s3cret-fail"}
			return &fakeEnv{Template: &lifecycle.Template{Name: "failx"}, Output: out,
				Err: &lifecycle.StartError{Env: name, Reason: "the dev server exited with status 3", Tail: out}}
		case strings.HasPrefix(name, "slow-"):
			return &fakeEnv{Template: &lifecycle.Template{Name: "slowx"}, Output: []string{"oauth code=s3cret-slow"},
				Started: slowStarted, Waiting: slowWaiting}
		}
		return &fakeEnv{Template: &lifecycle.Template{Name: "x"}, Output: []string{"stack trace s3cret-run"}}
	}
	users := filepath.Join(t.TempDir(), "htpasswd")
	writeUsers(t, users, "alice", "wonder")
	show := true
	policy, err := access.New(access.Config{Rules: []access.Rule{{Basic: &access.Basic{HtpasswdFile: users}, ShowOutput: &show}}})
	if err != nil {
		t.Fatal(err)
	}
	g := startFake(t, gwOptions{Domains: []string{testDomain}, Settings: blocking, Config: func(c *gateway.Config) { c.Access = policy }}, envs)
	alice := []string{"Authorization", "Basic YWxpY2U6d29uZGVy", "Accept", "application/json"}

	if resp, b := g.do(t, "GET", "web."+testDomain, "/", nil, alice...); resp.StatusCode != 200 {
		t.Fatalf("web: %d %s", resp.StatusCode, b)
	}
	resp, b := g.do(t, "GET", "fail-1."+testDomain, "/", nil, alice...)
	if resp.StatusCode != 502 || !strings.Contains(string(b), "s3cret-fail") {
		t.Fatalf("fail-1 as alice: %d %s, want 502 with the output (show_output: true)", resp.StatusCode, b)
	}
	slowDone := make(chan struct{})
	go func() {
		defer close(slowDone)
		req, _ := http.NewRequest("GET", "http://slow-1."+testDomain+"/", nil)
		for i := 0; i+1 < len(alice); i += 2 {
			req.Header.Set(alice[i], alice[i+1])
		}
		if resp, err := g.Client.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	t.Cleanup(func() {
		close(slowStarted)
		<-slowDone
	})
	<-slowWaiting // slow-1 is starting

	for _, tc := range []struct{ env, state, secret string }{
		{"web", "ready", "s3cret-run"},
		{"fail-1", "failed", "s3cret-fail"},
		{"slow-1", "starting", "s3cret-slow"},
	} {
		h := tc.env + "." + testDomain
		authed := g.statusAt(t, h, alice...)
		if authed.State != tc.state || !strings.Contains(strings.Join(authed.Output, "\n"), tc.secret) {
			t.Errorf("%s as alice: %+v, want state %s and the output", tc.env, authed, tc.state)
		}
		for _, who := range [][]string{nil, {"Authorization", "Basic YWxpY2U6bm9wZQ=="}} {
			anon := g.statusAt(t, h, who...)
			if anon.State != tc.state || len(anon.Output) != 0 {
				t.Errorf("%s anonymous (%v): %+v, want state %s and no output", tc.env, who, anon, tc.state)
			}
		}
	}
}

// TestNewEnvsPerClient is issue 13's test 3: 200 requests for random
// names from one address start at most the per-client allowance of envs;
// the rest get 429 with Retry-After; never more than max_envs run.
func TestNewEnvsPerClient(t *testing.T) {
	const perClient, maxEnvs = 5, 3
	g := startGateway(t, gwOptions{
		Limits: lifecycle.Limits{MaxEnvs: maxEnvs},
		Config: func(c *gateway.Config) { c.NewEnvs = gateway.NewNewEnvLimit(perClient, time.Hour, true) },
	})
	var ok, limited, other int
	peak, lastOK := 0, ""
	for i := range 200 {
		name := fmt.Sprintf("r%d-%x", i, rand.Uint64())
		resp, b := g.do(t, "GET", name+".localhost", "/healthz", nil)
		switch resp.StatusCode {
		case 200:
			ok++
			lastOK = name
		case 429:
			limited++
			if ra := resp.Header.Get("Retry-After"); ra == "" || ra == "0" {
				t.Fatalf("429 without Retry-After: %v", resp.Header)
			}
		default:
			other++
			t.Logf("%s: %d %s", name, resp.StatusCode, b)
		}
		live := 0
		for _, e := range g.Envs.List() {
			if e.State != lifecycle.Stopped {
				live++
			}
		}
		peak = max(peak, live)
	}
	if n := g.Net.Creates.Load(); n > perClient {
		t.Errorf("%d envs created, want at most %d", n, perClient)
	}
	if ok+other > perClient || limited < 200-perClient {
		t.Errorf("%d ok, %d other, %d limited: want at most %d let through", ok, other, limited, perClient)
	}
	if peak > maxEnvs {
		t.Errorf("%d envs at once, past max_envs %d", peak, maxEnvs)
	}
	// A known env takes no token: it still answers.
	if resp, _ := g.do(t, "GET", lastOK+".localhost", "/healthz", nil); resp.StatusCode != 200 {
		t.Errorf("%s, known, after the allowance: %d, want 200", lastOK, resp.StatusCode)
	}
}

// TestSetCookieHostOnly is issue 13's test 6: an env's Set-Cookie with
// Domain=.localhost reaches the client host-only, on the direct path and
// through ReverseProxy alike, unless the template opts out.
func TestSetCookieHostOnly(t *testing.T) {
	shared := &lifecycle.Template{Name: "shared", Match: "shared-*"}
	opted := gateway.TemplateSettings{"shared": {SharedDomainCookies: true}}
	g := startFake(t, gwOptions{Settings: opted}, func(name string) *fakeEnv {
		if strings.HasPrefix(name, "shared-") {
			return &fakeEnv{Template: shared}
		}
		return &fakeEnv{}
	})
	q := "/set-cookie?c=" + url.QueryEscape("s=1; Path=/; Domain=.localhost; HttpOnly") + "&c=" + url.QueryEscape("t=2; domain=a.localhost")
	for _, m := range []string{"direct", "reverseproxy"} {
		var body io.Reader
		if m == "reverseproxy" {
			body = io.MultiReader(strings.NewReader("")) // chunked: not the direct path
		}
		resp, b := g.do(t, "GET", "a.localhost", q, body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", m, resp.StatusCode, b)
		}
		if got := resp.Header.Values("Set-Cookie"); len(got) != 2 || got[0] != "s=1; Path=/; HttpOnly" || got[1] != "t=2; domain=a.localhost" {
			t.Errorf("%s: Set-Cookie %q, want the first host-only and the env's own host kept", m, got)
		}
		resp, _ = g.do(t, "GET", "shared-a.localhost", q, body)
		if got := resp.Header.Values("Set-Cookie"); len(got) != 2 || !strings.Contains(got[0], "Domain=.localhost") {
			t.Errorf("%s, template with shared_domain: Set-Cookie %q, want Domain kept", m, got)
		}
	}
}

// A TCP listener carries no HTTP request: only allow_cidrs admits a
// connection, and a refused one starts nothing, in either TLS mode.
func TestTCPAccess(t *testing.T) {
	envCert, _ := testCert(t, "dbtls--feature-x."+testDomain, "feature-x."+testDomain)
	g := startGateway(t, gwOptions{Templates: []*lifecycle.Template{multiPortTemplate(t, envCert)}, Domains: []string{testDomain},
		Config: func(c *gateway.Config) { c.Access = loopbackAccess(t) }})
	users := filepath.Join(t.TempDir(), "htpasswd")
	writeUsers(t, users, "alice", "wonder")
	policy, err := access.New(access.Config{Rules: []access.Rule{
		{Match: "open-*", AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
		{Match: "*", AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, Basic: &access.Basic{HtpasswdFile: users}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cm, gwRoots := internalCA(t)
	terminate := startTCP(t, g, gateway.TCPConfig{Port: "db", TLS: cm.TLSConfig(), Access: policy})
	passthrough := startTCP(t, g, gateway.TCPConfig{Port: "dbtls", Mode: gateway.TLSPassthrough, Access: policy})
	if _, err := echoOnce(t, terminate, "db--feature-x."+testDomain, gwRoots, "x"); err == nil {
		t.Error("terminate: a loopback client got through a rule that admits 192.0.2.0/24 or basic users")
	}
	d := &tls.Dialer{Config: &tls.Config{ServerName: "feature-x." + testDomain, InsecureSkipVerify: true}}
	if c, err := d.Dial("tcp", passthrough); err == nil {
		c.Close()
		t.Error("passthrough: a refused client reached the env's TLS server")
	}
	if n := g.Net.Creates.Load(); n != 0 {
		t.Fatalf("%d sandboxes created for refused connections", n)
	}
	if got, err := echoOnce(t, terminate, "db--open-1."+testDomain, gwRoots, "hello\n"); err != nil || got != "hello\n" {
		t.Fatalf("admitted client: %q, %v", got, err)
	}
}

// noNetwork makes no sandbox: a test that must start nothing.
type noNetwork struct{ creates atomic.Int64 }

func (n *noNetwork) Create(context.Context, string) (lifecycle.Sandbox, error) {
	n.creates.Add(1)
	return nil, errors.New("test: no sandbox")
}
func (n *noNetwork) Destroy(lifecycle.Sandbox) error { return nil }

// Names the source refuses make nothing, and no log line above debug,
// over HTTP and over a TCP listener: anyone can make them up by the
// thousand.
func TestRefusedNamesQuiet(t *testing.T) {
	allow := func(name string) error { // the env source's list: main alone
		if name != "main" {
			return errors.New("not in the source's list of names")
		}
		return nil
	}
	tmpl := &lifecycle.Template{Name: "all", Match: "*", Command: []string{"true"}, Port: 3000}
	if err := tmpl.Prepare(); err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	log := zerolog.New(&logs).Level(zerolog.DebugLevel)
	nw := &noNetwork{}
	data := t.TempDir()
	m, err := lifecycle.New(lifecycle.Config{Templates: []*lifecycle.Template{tmpl}, DataRoot: data, Network: nw,
		Launcher: &lifecycletest.RefusingLauncher{}, Allow: allow, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m.Close(ctx)
	})
	h, err := gateway.NewHandler(gateway.Config{Domains: []string{"localhost"}, Envs: gateway.Lifecycle{Manager: m}, Log: log,
		NewEnvs: gateway.NewNewEnvLimit(1000, time.Minute, true)})
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	tcp, err := gateway.NewTCPProxy(gateway.TCPConfig{Domains: []string{"localhost"}, Envs: gateway.Lifecycle{Manager: m}, Log: log, Mode: gateway.TLSPassthrough})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go tcp.Serve(ln)
	t.Cleanup(func() { tcp.Shutdown(context.Background()) })

	for i := range 20 {
		name := fmt.Sprintf("made-up-%d", i)
		req, _ := http.NewRequest("GET", s.URL+"/", nil)
		req.Host = name + ".localhost"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s: %d, want 404 (no such env)", name, resp.StatusCode)
		}
		d := &tls.Dialer{Config: &tls.Config{ServerName: name + ".localhost", InsecureSkipVerify: true}}
		if c, err := d.Dial("tcp", ln.Addr().String()); err == nil {
			c.Close()
			t.Fatalf("%s over TCP: handshake succeeded", name)
		}
	}
	if n := nw.creates.Load(); n != 0 || len(m.List()) != 0 {
		t.Fatalf("%d sandboxes, %d env entries for refused names", n, len(m.List()))
	}
	if ents, _ := os.ReadDir(data); len(ents) != 0 {
		t.Fatalf("data dirs for refused names: %v", ents)
	}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if line != "" && !strings.Contains(line, `"level":"debug"`) {
			t.Errorf("log line above debug for a refused name: %s", line)
		}
	}
}
