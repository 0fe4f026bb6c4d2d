package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/gateway/admin"
	"github.com/envgate/envgate/netns/netnstest"
	"golang.org/x/crypto/bcrypt"
)

// TestDashboardHost: admin.dashboard_host serves the dashboard on the
// gateway's listener behind access control: anonymous clients and wrong
// passwords get 401, a user of the matching access entry (basic auth)
// sees the running env in the page and in /v1/envs, and may press stop
// (with the admin API's header, as on the admin listener); reload and
// /metrics are not there.
func TestDashboardHost(t *testing.T) {
	netnstest.RequireRoot(t)
	users := filepath.Join(t.TempDir(), "htpasswd")
	hash, _ := bcrypt.GenerateFromPassword([]byte("wonder"), bcrypt.MinCost)
	if err := os.WriteFile(users, []byte("alice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	instance, cfg, addr := testInstance(t, 6, fmt.Sprintf(`admin: {dashboard_host: envgate.localhost}
access: [{match: envgate, basic: {htpasswd_file: %s}}]
`+demoTemplate, users))
	defer netnstest.CheckClean(t, instance)
	g := startServe(t, cfg, addr)
	defer g.stop(t, syscall.SIGTERM)
	if code, _, _ := g.get(t, "alpha.localhost", "/"); code != 200 {
		t.Fatalf("alpha: %d", code)
	}

	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}}
	do := func(method, path, user, pass string, action bool) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://envgate.localhost"+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		if action {
			req.Header.Set(admin.ActionHeader, "1")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	for _, who := range []struct{ user, pass string }{{"", ""}, {"alice", "wrong"}, {"mallory", "wonder"}} {
		for _, p := range []string{"/", "/v1/envs"} {
			if code, body := do("GET", p, who.user, who.pass, false); code != http.StatusUnauthorized || strings.Contains(body, "alpha") {
				t.Errorf("GET %s as %q/%q: %d, want 401 without the env list:\n%s", p, who.user, who.pass, code, body)
			}
		}
	}
	if code, _ := do("POST", "/v1/envs/alpha/stop", "", "", true); code != http.StatusUnauthorized {
		t.Errorf("anonymous stop: %d, want 401", code)
	}

	code, page := do("GET", "/", "alice", "wonder", false)
	if code != 200 || !strings.Contains(page, "alpha") {
		t.Fatalf("dashboard for alice: %d, want 200 listing alpha:\n%s", code, page)
	}
	code, body := do("GET", "/v1/envs", "alice", "wonder", false)
	var envs []admin.Env
	if err := json.Unmarshal([]byte(body), &envs); code != 200 || err != nil || len(envs) != 1 || envs[0].Name != "alpha" || envs[0].State != "ready" {
		t.Fatalf("GET /v1/envs for alice: %d %v, want alpha ready:\n%s", code, err, body)
	}
	for _, r := range []struct{ method, path string }{{"POST", "/v1/reload"}, {"GET", "/metrics"}} {
		if code, _ := do(r.method, r.path, "alice", "wonder", true); code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
			t.Errorf("%s %s on the dashboard host: %d, want 404 or 405", r.method, r.path, code)
		}
	}
	if code, _ := do("POST", "/v1/envs/alpha/stop", "alice", "wonder", false); code != http.StatusForbidden {
		t.Errorf("stop without %s: %d, want 403", admin.ActionHeader, code)
	}
	if code, body := do("POST", "/v1/envs/alpha/stop", "alice", "wonder", true); code != 200 {
		t.Errorf("stop: %d\n%s", code, body)
	}
	waitFor(t, "alpha to stop", func() bool {
		_, body := do("GET", "/v1/envs/alpha", "alice", "wonder", false)
		return !strings.Contains(body, `"ready"`)
	})
}

// TestDashboardHostConfig: admin.dashboard_host must be a label under a
// configured domain that some access entry matches.
func TestDashboardHostConfig(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"admin: {dashboard_host: envgate.example.org}\naccess: [{match: envgate, allow_cidrs: [127.0.0.1]}]\n", "want one label under a configured domain"},
		{"admin: {dashboard_host: envgate.localhost}\naccess: [{match: pr-*, allow_cidrs: [127.0.0.1]}]\n", `no access: entry matches "envgate"`},
	} {
		if _, err := loadString(t, tc.yaml); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error with %q", tc.yaml, err, tc.want)
		}
	}
	if _, err := loadString(t, "admin: {dashboard_host: envgate.localhost}\naccess: [{match: envgate, allow_cidrs: [127.0.0.1]}]\n"); err != nil {
		t.Errorf("a valid dashboard_host: %v", err)
	}
}
