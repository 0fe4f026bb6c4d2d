package webhook

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(s string)           { r.mu.Lock(); r.events = append(r.events, s); r.mu.Unlock() }
func (r *recorder) Pushed(b, c string)     { r.add("push " + b + " " + c) }
func (r *recorder) BranchDeleted(b string) { r.add("delete " + b) }
func (r *recorder) PullRequestUpdated(p PullRequest) {
	r.add(fmt.Sprintf("pr-updated %d %s %s", p.Number, p.Branch, p.Head))
}
func (r *recorder) PullRequestClosed(p PullRequest) {
	r.add(fmt.Sprintf("pr-closed %d %s %s", p.Number, p.Branch, p.Head))
}

func post(h http.Handler, path string, hdr map[string]string, body []byte) int {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code
}

func TestGitHub(t *testing.T) {
	secret := []byte("s3cret")
	rec := &recorder{}
	h := New(Config{GitHubSecret: secret, Events: rec})
	push := []byte(`{"ref":"refs/heads/feature/Login_Page","after":"abc123","deleted":false}`)
	del := []byte(`{"ref":"refs/heads/old","after":"` + zeroSHA + `","deleted":true}`)
	tag := []byte(`{"ref":"refs/tags/v1","after":"abc123"}`)
	closed := []byte(`{"action":"closed","pull_request":{"number":7,"head":{"ref":"feature/x","sha":"def456"}}}`)
	opened := []byte(`{"action":"opened","pull_request":{"number":8,"head":{"ref":"y","sha":"0a1"}}}`)
	gh := func(event, id string, body []byte, sig string) int {
		return post(h, GitHubPath, map[string]string{"X-GitHub-Event": event, "X-GitHub-Delivery": id, "X-Hub-Signature-256": sig}, body)
	}
	tests := []struct {
		name  string
		code  int
		event string
		id    string
		body  []byte
		sig   string
	}{
		{"push", 202, "push", "d1", push, Sign(secret, push)},
		{"replayed", 409, "push", "d1", push, Sign(secret, push)},
		{"wrong secret", 401, "push", "d2", push, Sign([]byte("other"), push)},
		{"missing signature", 401, "push", "d3", push, ""},
		{"sha1 only", 401, "push", "d4", push, "sha1=00"},
		{"body changed", 401, "push", "d5", append(slices.Clone(push), ' '), Sign(secret, push)},
		{"no delivery id", 400, "push", "", push, Sign(secret, push)},
		{"delete", 202, "push", "d6", del, Sign(secret, del)},
		{"tag ignored", 202, "push", "d7", tag, Sign(secret, tag)},
		{"pr closed", 202, "pull_request", "d8", closed, Sign(secret, closed)},
		{"pr opened", 202, "pull_request", "d9", opened, Sign(secret, opened)},
		{"ping", 202, "ping", "d10", []byte(`{}`), Sign(secret, []byte(`{}`))},
		{"not json", 400, "push", "d11", []byte(`{`), Sign(secret, []byte(`{`))},
	}
	for _, tt := range tests {
		if code := gh(tt.event, tt.id, tt.body, tt.sig); code != tt.code {
			t.Errorf("%s: status %d, want %d", tt.name, code, tt.code)
		}
	}
	want := []string{"push feature/Login_Page abc123", "delete old", "pr-closed 7 feature/x def456", "pr-updated 8 y 0a1"}
	if !slices.Equal(rec.events, want) {
		t.Errorf("events %q, want %q", rec.events, want)
	}
	// Too large: refused before the signature is even checked.
	big := bytes.Repeat([]byte("x"), MaxBody+1)
	if code := gh("push", "d12", big, Sign(secret, big)); code != 413 {
		t.Errorf("11 MiB body: status %d, want 413", code)
	}
	if code := post(h, GitLabPath, nil, push); code != 404 {
		t.Errorf("gitlab without a token configured: %d, want 404", code)
	}
}

func TestGitLab(t *testing.T) {
	rec := &recorder{}
	h := New(Config{GitLabToken: []byte("tok"), Events: rec})
	push := []byte(`{"ref":"refs/heads/main","after":"abc"}`)
	mr := []byte(`{"object_attributes":{"iid":3,"action":"merge","source_branch":"f","last_commit":{"id":"c1"}}}`)
	gl := func(event, id, token string, body []byte) int {
		return post(h, GitLabPath, map[string]string{"X-Gitlab-Event": event, "X-Gitlab-Event-UUID": id, "X-Gitlab-Token": token}, body)
	}
	for _, c := range []struct {
		code                   int
		event, id, token, body string
	}{
		{202, "Push Hook", "u1", "tok", string(push)},
		{409, "Push Hook", "u1", "tok", string(push)},
		{401, "Push Hook", "u2", "wrong", string(push)},
		{401, "Push Hook", "u3", "", string(push)},
		{202, "Merge Request Hook", "u4", "tok", string(mr)},
	} {
		if code := gl(c.event, c.id, c.token, []byte(c.body)); code != c.code {
			t.Errorf("%s %s token %q: %d, want %d", c.event, c.id, c.token, code, c.code)
		}
	}
	if got := strings.Join(rec.events, "; "); got != "push main abc; pr-closed 3 f c1" {
		t.Errorf("events: %s", got)
	}
	if code := post(h, GitHubPath, nil, push); code != 404 {
		t.Errorf("github without a secret configured: %d, want 404", code)
	}
}

func TestIDSetBounded(t *testing.T) {
	s := newIDSet(3, "", zerolog.Nop())
	for _, id := range []string{"a", "b", "c", "d"} {
		if !s.add(id) {
			t.Fatalf("%s not new", id)
		}
	}
	if s.add("d") {
		t.Error("d replayed but accepted")
	}
	if !s.add("a") {
		t.Error("a should have been forgotten (oldest of 4 in a set of 3)")
	}
	if len(s.ids) != 3 || s.order.Len() != 3 {
		t.Errorf("set holds %d/%d, want 3", len(s.ids), s.order.Len())
	}
}
