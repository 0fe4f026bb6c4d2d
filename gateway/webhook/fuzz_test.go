package webhook

import (
	"net/http"
	"strings"
	"testing"
)

// FuzzDeliveries: any body, signed or not, under any event name, gets an
// answer without a panic; unsigned bodies never reach Events; events that
// do carry a branch name from refs/heads/ (push) or a pull request.
func FuzzDeliveries(f *testing.F) {
	f.Add("push", []byte(`{"ref":"refs/heads/main","after":"abc"}`), true)
	f.Add("push", []byte(`{"ref":"refs/heads/x","deleted":true}`), true)
	f.Add("pull_request", []byte(`{"action":"closed","pull_request":{"number":1,"head":{"ref":"b","sha":"c"}}}`), true)
	f.Add("Push Hook", []byte(`{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"}`), false)
	f.Add("Merge Request Hook", []byte(`{"object_attributes":{"iid":2,"action":"merge","source_branch":"f"}}`), false)
	f.Add("push", []byte(`{"ref":5}`), true)
	secret := []byte("s")
	f.Fuzz(func(t *testing.T, event string, body []byte, github bool) {
		rec := &recorder{}
		h := New(Config{GitHubSecret: secret, GitLabToken: []byte("tok"), Events: rec})
		hdr := map[string]string{"X-GitHub-Delivery": "d", "X-Gitlab-Event-UUID": "u"}
		path := GitLabPath
		if github {
			path = GitHubPath
			hdr["X-GitHub-Event"] = event
			hdr["X-Hub-Signature-256"] = Sign(secret, body)
		} else {
			hdr["X-Gitlab-Event"] = event
			hdr["X-Gitlab-Token"] = "tok"
		}
		code := post(h, path, hdr, body)
		if code != http.StatusAccepted && code != http.StatusBadRequest {
			t.Fatalf("signed delivery: status %d", code)
		}
		for _, e := range rec.events {
			if strings.HasPrefix(e, "push ") || strings.HasPrefix(e, "delete ") {
				continue
			}
			if !strings.HasPrefix(e, "pr-") {
				t.Fatalf("unexpected event %q", e)
			}
		}
		// The same body unsigned changes nothing.
		rec2 := &recorder{}
		h2 := New(Config{GitHubSecret: secret, GitLabToken: []byte("tok"), Events: rec2})
		delete(hdr, "X-Hub-Signature-256")
		hdr["X-Gitlab-Token"] = "wrong"
		if code := post(h2, path, hdr, body); code != http.StatusUnauthorized {
			t.Fatalf("unsigned delivery: status %d, want 401", code)
		}
		if len(rec2.events) != 0 {
			t.Fatalf("unsigned delivery reached Events: %v", rec2.events)
		}
	})
}
