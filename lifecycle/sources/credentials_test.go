package sources

import (
	"context"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestMirrorCredentialsFile: a repository served over HTTP on loopback
// (git http-backend) that wants basic auth is cloned and fetched with the
// credentials in Mirror.CredentialsFile, and listed by RemoteHeads with
// them; without the file git fails at once (no prompt), and the
// credentials never appear in the mirror's config.
func TestMirrorCredentialsFile(t *testing.T) {
	backend, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Skip("needs git")
	}
	httpBackend := filepath.Join(strings.TrimSpace(string(backend)), "git-http-backend")
	if _, err := os.Stat(httpBackend); err != nil {
		t.Skipf("needs %s (Debian's git package has it)", httpBackend)
	}
	ctx := context.Background()
	root := t.TempDir()
	repo := filepath.Join(root, "served", "app")
	gitT(t, root, "init", "--quiet", "--initial-branch=main", repo)
	c1 := commitFile(t, repo, "VERSION", "v1\n")
	var refused atomic.Int64
	cgiHandler := &cgi.Handler{Path: httpBackend, Env: []string{
		"GIT_PROJECT_ROOT=" + filepath.Join(root, "served"), "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "HOME=/nonexistent"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "deploy" || p != "t0ken" {
			refused.Add(1)
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		cgiHandler.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	url := srv.URL + "/app/.git"

	bare := &Mirror{Repo: url, Dir: filepath.Join(root, "state0", "mirror.git"), Worktrees: filepath.Join(root, "state0", "checkouts")}
	if err := bare.Sync(ctx); err == nil {
		t.Fatal("clone without credentials succeeded against a server that wants them")
	}
	if refused.Load() == 0 {
		t.Fatal("the server refused nothing: the test cannot tell credentials apart")
	}

	creds := filepath.Join(root, "git-credentials")
	if err := os.WriteFile(creds, []byte(strings.Replace(srv.URL, "http://", "http://deploy:t0ken@", 1)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &Mirror{Repo: url, Dir: filepath.Join(root, "state", "mirror.git"), Worktrees: filepath.Join(root, "state", "checkouts"), CredentialsFile: creds}
	if err := m.Sync(ctx); err != nil {
		t.Fatalf("clone with the credentials file: %v", err)
	}
	c2 := commitFile(t, repo, "VERSION", "v2\n")
	if err := m.Sync(ctx); err != nil {
		t.Fatalf("fetch with the credentials file: %v", err)
	}
	heads, err := m.Heads(ctx)
	if err != nil || heads["main"] != c2 || c2 == c1 {
		t.Fatalf("heads after the fetch: %v %v, want main at %s", heads, err, c2)
	}
	if remote, err := RemoteHeads(ctx, url, creds); err != nil || remote["main"] != c2 {
		t.Errorf("RemoteHeads with the credentials file: %v %v", remote, err)
	}
	if _, err := RemoteHeads(ctx, url, ""); err == nil {
		t.Error("RemoteHeads without credentials succeeded")
	}
	cfg, err := os.ReadFile(filepath.Join(m.Dir, "config"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(cfg), "t0ken") {
		t.Errorf("the token landed in the mirror's config:\n%s", cfg)
	}
}
