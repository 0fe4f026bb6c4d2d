package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestAccessThroughBinary runs `envgate serve` on a public domain with
// the internal CA: an env no access rule covers gets neither a
// certificate nor an answer but 403; a covered env is served; `envgate
// share` prints a link that admits its holder to one env behind basic
// auth, and to no other.
func TestAccessThroughBinary(t *testing.T) {
	users := filepath.Join(t.TempDir(), "htpasswd")
	h, _ := bcrypt.GenerateFromPassword([]byte("wonder"), bcrypt.MinCost)
	if err := os.WriteFile(users, []byte("alice:"+string(h)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newTLSSetup(t, acmeDomain)
	s.tls = []string{"mode: internal", "redirect_http: false"} // plain HTTP serves too
	s.access = fmt.Sprintf(`[{match: "pr-*", allow_cidrs: [127.0.0.0/8, "::1/128"]}, {match: "sec-*", basic: {htpasswd_file: %s}}]`, users)
	startTLSGateway(t, s)
	rootPEM, err := os.ReadFile(filepath.Join(s.stateDir, "ca", "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := tlsHandshake(ctx, s.httpsAddr(), "main."+acmeDomain, roots); err == nil {
		t.Error("a certificate for main, which no access rule covers")
	}
	if _, err := tlsHandshake(ctx, s.httpsAddr(), "pr-1."+acmeDomain, roots); err != nil {
		t.Errorf("pr-1: %v", err)
	}
	plain := &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, s.httpAddr())
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       60 * time.Second,
	}
	get := func(host, path, cookie string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+host+path, nil)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := plain.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := get("main."+acmeDomain, "/", ""); r.StatusCode != 403 {
		t.Errorf("main: %d, want 403", r.StatusCode)
	}
	if r := get("pr-1."+acmeDomain, "/", ""); r.StatusCode != 200 {
		t.Errorf("pr-1 from loopback: %d", r.StatusCode)
	}
	if r := get("sec-1."+acmeDomain, "/", ""); r.StatusCode != 401 {
		t.Errorf("sec-1 anonymous: %d, want 401", r.StatusCode)
	}

	out, err := exec.Command(envgateBinary(t), "--config", s.cfgPath, "share", "sec-1", "--for", "1h", "--domain", acmeDomain).Output()
	if err != nil {
		t.Fatalf("envgate share: %v", err)
	}
	link := strings.TrimSpace(string(out))
	prefix := "https://sec-1." + acmeDomain + fmt.Sprintf(":%d", s.httpsPort) + "/_envgate/share/"
	if !strings.HasPrefix(link, prefix) {
		t.Fatalf("link %q, want it to start with %s", link, prefix)
	}
	r := get("sec-1."+acmeDomain, strings.TrimPrefix(link, prefix[:strings.Index(prefix, "/_envgate")]), "")
	cookies := r.Cookies()
	if r.StatusCode != 302 || len(cookies) != 1 || cookies[0].Domain != "" {
		t.Fatalf("share link: %d, cookies %v; want a 302 with one host-only cookie", r.StatusCode, cookies)
	}
	c := cookies[0].Name + "=" + cookies[0].Value
	if r := get("sec-1."+acmeDomain, "/", c); r.StatusCode != 200 {
		t.Errorf("sec-1 with the share cookie: %d", r.StatusCode)
	}
	if r := get("sec-2."+acmeDomain, "/", c); r.StatusCode != 401 {
		t.Errorf("sec-2 with sec-1's share cookie: %d, want 401", r.StatusCode)
	}
}
