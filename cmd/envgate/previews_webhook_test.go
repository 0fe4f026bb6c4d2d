package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/gateway/webhook"
)

// fakeGitHub implements the REST endpoints previews use, recording calls.
type fakeGitHub struct {
	mu       sync.Mutex
	calls    []string // "METHOD path body"
	nextID   int
	deploys  map[int]string // id -> environment
	comments map[int]string // id -> body
	onIssue  map[int][]int  // PR -> comment ids
}

func newFakeGitHub(t *testing.T) (*fakeGitHub, *httptest.Server) {
	f := &fakeGitHub{nextID: 100, deploys: map[int]string{}, comments: map[int]string{}, onIssue: map[int][]int{}}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeGitHub) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, r.Method+" "+r.URL.RequestURI()+" "+string(body))
	if r.Header.Get("Authorization") != "Bearer gh-token" {
		http.Error(w, "bad credentials", http.StatusUnauthorized)
		return
	}
	var in map[string]any
	json.Unmarshal(body, &in)
	p := strings.TrimPrefix(r.URL.Path, "/repos/acme/app")
	var pr, id int
	switch {
	case r.Method == "POST" && p == "/deployments":
		f.nextID++
		f.deploys[f.nextID] = in["environment"].(string)
		json.NewEncoder(w).Encode(map[string]int{"id": f.nextID})
	case r.Method == "GET" && p == "/deployments":
		var out []map[string]int
		for id, env := range f.deploys {
			if env == r.URL.Query().Get("environment") {
				out = append(out, map[string]int{"id": id})
			}
		}
		json.NewEncoder(w).Encode(out)
	case r.Method == "POST" && strings.HasSuffix(p, "/statuses"):
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte("{}"))
	case r.Method == "GET" && scan(p, "/issues/%d/comments", &pr):
		out := []map[string]any{}
		for _, id := range f.onIssue[pr] {
			out = append(out, map[string]any{"id": id, "body": f.comments[id]})
		}
		json.NewEncoder(w).Encode(out)
	case r.Method == "POST" && scan(p, "/issues/%d/comments", &pr):
		f.nextID++
		f.comments[f.nextID] = in["body"].(string)
		f.onIssue[pr] = append(f.onIssue[pr], f.nextID)
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]int{"id": f.nextID})
	case r.Method == "PATCH" && scan(p, "/issues/comments/%d", &id):
		f.comments[id] = in["body"].(string)
		w.Write([]byte("{}"))
	default:
		http.NotFound(w, r)
	}
}

func scan(p, format string, n *int) bool {
	_, err := fmt.Sscanf(p, format, n)
	return err == nil && fmt.Sprintf(format, *n) == p
}

// has reports whether a recorded call contains every one of parts.
func (f *fakeGitHub) has(parts ...string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.calls {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(c, p)
		}
		if all {
			return true
		}
	}
	return false
}

func (f *fakeGitHub) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// client returns an HTTP client whose connections all go to the gateway.
func (g *gatewayProc) client() *http.Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, g.addr)
	}}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// deliver posts a GitHub webhook to the gateway's previews host.
func deliver(t *testing.T, g *gatewayProc, secret, event, id string, payload any) int {
	t.Helper()
	body, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+g.addr+webhook.GitHubPath, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "localhost"
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", id)
	req.Header.Set("X-Hub-Signature-256", webhook.Sign([]byte(secret), body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestPreviewWebhooks (issue 14, tests 2 and 4): a signed push webhook
// updates a running env (data dir kept) and posts a deployment status
// with the env's URL; a replayed delivery and a wrong signature change
// nothing; a pull request closed webhook destroys the env, marks its
// deployments inactive and edits the PR's comment. The mirror refreshes
// only on webhooks here (refresh: 1h).
func TestPreviewWebhooks(t *testing.T) {
	repo := newGitRepo(t)
	repo.commit("main", map[string]string{"VERSION": "main-v1\n"})
	repo.commit("feature/Login_Page", map[string]string{"VERSION": "login-v1\n"})
	fake, api := newFakeGitHub(t)
	secretFile, tokenFile := previewSecrets(t, "hook-secret", "gh-token")
	instance, cfg, addr, state := previewInstance(t, previewTemplate, repo, "1h", fmt.Sprintf(`previews:
  github: {secret_file: %s, token_file: %s, repo: acme/app, api: %s}
`, secretFile, tokenFile, api.URL))
	_, port, _ := strings.Cut(addr, ":")
	envURL := "http://feature-login-page.localhost:" + port + "/"
	g := startServe(t, cfg, addr)
	t.Cleanup(func() { g.stop(t, syscall.SIGTERM) })

	if code, body, _ := g.get(t, "feature-login-page.localhost", "/"); code != 200 || !strings.Contains(body, "login-v1") {
		t.Fatalf("feature-login-page: %d %q", code, body)
	}
	keep := filepath.Join(state, "envs", "feature-login-page", "kept.txt")
	if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := deliver(t, g, "hook-secret", "pull_request", "d-open", map[string]any{"action": "opened",
		"pull_request": map[string]any{"number": 7, "head": map[string]string{"ref": "feature/Login_Page", "sha": "x"}}}); code != 202 {
		t.Fatalf("pull_request opened: status %d", code)
	}
	waitFor(t, "the PR comment with the preview URL", func() bool {
		return fake.has("POST /repos/acme/app/issues/7/comments", "envgate-preview", envURL)
	})

	// A download in flight on the old server when the push lands: it
	// must finish whole before the restart (the client reads it only
	// after the push, so the server is blocked writing meanwhile).
	const size = 64 << 20
	dl := g.client().Get
	resp, err := dl("http://feature-login-page.localhost/download?bytes=" + fmt.Sprint(size))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("download: %v %v", resp, err)
	}
	defer resp.Body.Close()
	first := make([]byte, 4096)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}

	repo.commit("feature/Login_Page", map[string]string{"VERSION": "login-v2\n"})
	head := repo.git("rev-parse", "feature/Login_Page")
	push := map[string]any{"ref": "refs/heads/feature/Login_Page", "after": head}
	if code := deliver(t, g, "wrong-secret", "push", "d-push", push); code != 401 {
		t.Errorf("push with a wrong signature: status %d, want 401", code)
	}
	if code := deliver(t, g, "hook-secret", "push", "d-push", push); code != 202 {
		t.Fatalf("signed push: status %d, want 202", code)
	}
	if n, err := io.Copy(io.Discard, resp.Body); err != nil || n+int64(len(first)) != size {
		t.Errorf("download in flight during the push: %d bytes, %v; want all %d: requests in flight finish on the old server", n+int64(len(first)), err, size)
	}
	waitFor(t, "feature-login-page to serve login-v2", func() bool {
		code, body, _ := g.get(t, "feature-login-page.localhost", "/")
		return code == 200 && strings.Contains(body, "login-v2")
	})
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("data dir not kept across the update: %v", err)
	}
	waitFor(t, "a deployment of the new head and its success status", func() bool {
		return fake.has("POST /repos/acme/app/deployments ", `"ref":"`+head+`"`, `"environment":"preview/feature-login-page"`) &&
			fake.has("POST /repos/acme/app/deployments/", "/statuses", `"state":"success"`, `"environment_url":"`+envURL+`"`)
	})
	waitFor(t, "the PR comment edited with the new commit", func() bool {
		return fake.has("PATCH /repos/acme/app/issues/comments/", head[:12])
	})
	calls := fake.count()
	if code := deliver(t, g, "hook-secret", "push", "d-push", push); code != 409 {
		t.Errorf("replayed delivery: status %d, want 409", code)
	}

	if code := deliver(t, g, "hook-secret", "pull_request", "d-close", map[string]any{"action": "closed",
		"pull_request": map[string]any{"number": 7, "head": map[string]string{"ref": "feature/Login_Page", "sha": head}}}); code != 202 {
		t.Fatalf("pull_request closed: status %d", code)
	}
	waitFor(t, "the env's worktree and data dir to be removed", func() bool {
		_, e1 := os.Stat(filepath.Join(state, "git", "checkouts", "feature-login-page"))
		_, e2 := os.Stat(filepath.Join(state, "envs", "feature-login-page"))
		return os.IsNotExist(e1) && os.IsNotExist(e2)
	})
	waitFor(t, "the deployment marked inactive and the comment edited", func() bool {
		return fake.has("/statuses", `"state":"inactive"`) && fake.has("PATCH /repos/acme/app/issues/comments/", "removed")
	})
	if fake.count() <= calls {
		t.Errorf("no API calls after the replay and the close")
	}
	// The replay made no deployment of its own: exactly two (the open and
	// the push), all for this env.
	fake.mu.Lock()
	n := len(fake.deploys)
	fake.mu.Unlock()
	if n != 2 {
		t.Errorf("%d deployments, want 2 (PR opened, push): a replayed delivery must change nothing", n)
	}
	if ns, _ := instanceState(t, instance); len(ns) != 0 {
		t.Errorf("namespaces after the close: %v, want none (the env stopped)", ns)
	}
}

// TestPreviewDestroyAfter (issue 14, test 5): an env with no request for
// destroy_after loses its checkout and data dir; an env that keeps
// getting requests keeps them.
func TestPreviewDestroyAfter(t *testing.T) {
	repo := newGitRepo(t)
	repo.commit("main", map[string]string{"VERSION": "main-v1\n"})
	repo.commit("busy", map[string]string{"VERSION": "busy-v1\n"})
	_, cfg, addr, state := previewInstance(t, previewTemplate, repo, "200ms", "previews: {destroy_after: 1500ms}\n")
	g := startServe(t, cfg, addr)
	t.Cleanup(func() { g.stop(t, syscall.SIGTERM) })
	for _, env := range []string{"main", "busy"} {
		if code, body, _ := g.get(t, env+".localhost", "/"); code != 200 || !strings.Contains(body, env+"-v1") {
			t.Fatalf("%s: %d %q", env, code, body)
		}
	}
	gone := func(env string) bool {
		_, e1 := os.Stat(filepath.Join(state, "git", "checkouts", env))
		_, e2 := os.Stat(filepath.Join(state, "envs", env))
		return os.IsNotExist(e1) && os.IsNotExist(e2)
	}
	// busy gets a request at least every 200ms until main is gone.
	waitFor(t, "main's checkout and data dir to be removed", func() bool {
		if code, _, _ := g.get(t, "busy.localhost", "/"); code != 200 {
			t.Fatalf("busy: status %d", code)
		}
		return gone("main")
	})
	if gone("busy") {
		t.Errorf("busy, requested all along, was destroyed")
	}
	// main comes back fresh on its next request.
	if code, body, _ := g.get(t, "main.localhost", "/"); code != 200 || !strings.Contains(body, "main-v1") {
		t.Errorf("main after destroy: %d %q", code, body)
	}
}

// TestPreviewGitLab: a GitLab push hook with the right token updates the
// running env and gives the merge request's environment the env's URL; a
// wrong token gets 401; a merge request merged destroys the env and stops
// the environment.
func TestPreviewGitLab(t *testing.T) {
	repo := newGitRepo(t)
	repo.commit("main", map[string]string{"VERSION": "main-v1\n"})
	repo.commit("feature/Login_Page", map[string]string{"VERSION": "login-v1\n"})
	var mu sync.Mutex
	var calls []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls = append(calls, r.Method+" "+r.URL.EscapedPath()+" "+string(b))
		mu.Unlock()
		switch {
		case r.Header.Get("PRIVATE-TOKEN") != "gl-token":
			w.WriteHeader(401)
		case r.Method == "GET" && strings.HasSuffix(r.URL.Path, "/environments"):
			w.Write([]byte(`[{"id": 42, "name": "preview/feature-login-page"}]`))
		case r.Method == "GET":
			w.Write([]byte(`[]`))
		default:
			w.Write([]byte(`{}`))
		}
	}))
	t.Cleanup(api.Close)
	has := func(parts ...string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range calls {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(c, p)
			}
			if all {
				return true
			}
		}
		return false
	}
	secretFile, tokenFile := previewSecrets(t, "gl-secret", "gl-token")
	_, cfg, addr, state := previewInstance(t, previewTemplate, repo, "1h", fmt.Sprintf(`previews:
  gitlab: {secret_file: %s, token_file: %s, project: acme/app, api: %s/api/v4}
`, secretFile, tokenFile, api.URL))
	_, port, _ := strings.Cut(addr, ":")
	g := startServe(t, cfg, addr)
	t.Cleanup(func() { g.stop(t, syscall.SIGTERM) })
	hook := func(event, id, token string, payload any) int {
		t.Helper()
		body, _ := json.Marshal(payload)
		req, _ := http.NewRequest(http.MethodPost, "http://"+g.addr+webhook.GitLabPath, bytes.NewReader(body))
		req.Host = "localhost"
		req.Header.Set("X-Gitlab-Event", event)
		req.Header.Set("X-Gitlab-Event-UUID", id)
		req.Header.Set("X-Gitlab-Token", token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	if code, body, _ := g.get(t, "feature-login-page.localhost", "/"); code != 200 || !strings.Contains(body, "login-v1") {
		t.Fatalf("feature-login-page: %d %q", code, body)
	}
	repo.commit("feature/Login_Page", map[string]string{"VERSION": "login-v2\n"})
	push := map[string]any{"ref": "refs/heads/feature/Login_Page", "after": repo.git("rev-parse", "feature/Login_Page")}
	if code := hook("Push Hook", "u1", "wrong", push); code != 401 {
		t.Errorf("push hook with a wrong token: %d, want 401", code)
	}
	if code := hook("Push Hook", "u1", "gl-secret", push); code != 202 {
		t.Fatalf("push hook: %d, want 202", code)
	}
	waitFor(t, "feature-login-page to serve login-v2", func() bool {
		code, body, _ := g.get(t, "feature-login-page.localhost", "/")
		return code == 200 && strings.Contains(body, "login-v2")
	})
	waitFor(t, "the environment's URL set", func() bool {
		return has("PUT /api/v4/projects/acme%2Fapp/environments/42", `"external_url":"http://feature-login-page.localhost:`+port+`/"`)
	})
	if code := hook("Merge Request Hook", "u2", "gl-secret", map[string]any{"object_attributes": map[string]any{
		"iid": 4, "action": "merge", "source_branch": "feature/Login_Page"}}); code != 202 {
		t.Fatalf("merge request hook: %d", code)
	}
	waitFor(t, "the env's data dir removed and the environment stopped", func() bool {
		_, err := os.Stat(filepath.Join(state, "envs", "feature-login-page"))
		return os.IsNotExist(err) && has("POST /api/v4/projects/acme%2Fapp/environments/42/stop")
	})
	waitFor(t, "a note on the merge request saying the preview is removed", func() bool {
		return has("POST /api/v4/projects/acme%2Fapp/merge_requests/4/notes", "removed")
	})
}
