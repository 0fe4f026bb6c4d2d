package sources

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestGitHubRetries: a failing API call is retried with backoff until it
// succeeds, a retried deployment is not made twice, and the comment is
// made once and then edited.
func TestGitHubRetries(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	fails := 2 // the first two deployment creations answer 502
	comments := map[string]string{}
	done := make(chan struct{}, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, r.Method+" "+r.URL.Path)
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(401)
			return
		}
		switch {
		case r.Method == "POST" && r.URL.Path == "/repos/a/b/deployments":
			if fails > 0 {
				fails--
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			w.Write([]byte(`{"id": 9}`))
		case r.Method == "POST" && r.URL.Path == "/repos/a/b/deployments/9/statuses":
			w.Write([]byte(`{}`))
			done <- struct{}{}
		case r.Method == "GET" && r.URL.Path == "/repos/a/b/issues/3/comments":
			out := []map[string]any{}
			if body, ok := comments["5"]; ok {
				out = append(out, map[string]any{"id": 5, "body": body})
			}
			json.NewEncoder(w).Encode(out)
		case r.Method == "POST" && r.URL.Path == "/repos/a/b/issues/3/comments":
			var in map[string]string
			json.Unmarshal(b, &in)
			comments["5"] = in["body"]
			w.Write([]byte(`{"id": 5}`))
			done <- struct{}{}
		case r.Method == "PATCH" && r.URL.Path == "/repos/a/b/issues/comments/5":
			var in map[string]string
			json.Unmarshal(b, &in)
			comments["5"] = in["body"]
			w.Write([]byte(`{}`))
			done <- struct{}{}
		default:
			w.WriteHeader(404)
		}
	}))
	t.Cleanup(srv.Close)
	g := NewGitHub(srv.URL, "a/b", "tok", zerolog.Nop())
	g.firstWait = time.Millisecond
	t.Cleanup(g.Close)
	g.Deployed("feature-x", "abc", "https://feature-x.example.test/")
	g.Comment(3, "first")
	g.Comment(3, "second")
	for range 3 {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("API calls not done; calls so far: %v", calls)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	got := strings.Join(calls, ", ")
	want := "POST /repos/a/b/deployments, POST /repos/a/b/deployments, POST /repos/a/b/deployments, POST /repos/a/b/deployments/9/statuses, " +
		"GET /repos/a/b/issues/3/comments, POST /repos/a/b/issues/3/comments, GET /repos/a/b/issues/3/comments, PATCH /repos/a/b/issues/comments/5"
	if got != want {
		t.Errorf("calls:\n %s\nwant\n %s", got, want)
	}
	if c := comments["5"]; !strings.HasPrefix(c, CommentMarker) || !strings.HasSuffix(c, "second") {
		t.Errorf("comment %q, want the marker and the second text", c)
	}
}

// TestGitHubDeploymentIDs: OnDeployment is told the ID of each deployment
// made; Destroyed marks inactive the deployments GitHub lists for the env
// and those it was given, each once.
func TestGitHubDeploymentIDs(t *testing.T) {
	var mu sync.Mutex
	var inactive []string
	done := make(chan struct{}, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch {
		case r.Method == "POST" && r.URL.Path == "/repos/a/b/deployments":
			w.Write([]byte(`{"id": 41}`))
		case r.Method == "GET" && r.URL.Path == "/repos/a/b/deployments" && r.URL.Query().Get("environment") == "preview/feature-x":
			w.Write([]byte(`[{"id": 41}, {"id": 40}]`))
		case r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/statuses"):
			if strings.Contains(string(b), `"inactive"`) {
				mu.Lock()
				inactive = append(inactive, strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/repos/a/b/deployments/"), "/statuses"))
				mu.Unlock()
			}
			w.Write([]byte(`{}`))
			done <- struct{}{}
		default:
			w.WriteHeader(404)
		}
	}))
	t.Cleanup(srv.Close)
	g := NewGitHub(srv.URL, "a/b", "tok", zerolog.Nop())
	ids := make(chan int64, 1)
	g.OnDeployment = func(env string, id int64) {
		if env == "feature-x" {
			ids <- id
		}
	}
	t.Cleanup(g.Close)
	g.Deployed("feature-x", "abc", "https://feature-x.example.test/")
	select {
	case id := <-ids:
		if id != 41 {
			t.Errorf("OnDeployment told %d, want 41", id)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("OnDeployment not called")
	}
	<-done // the success status
	g.Destroyed("feature-x", []int64{7, 41})
	for range 3 {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("inactive statuses not all posted: %v", inactive)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(inactive, ","); got != "7,41,40" {
		t.Errorf("inactive statuses for %s, want 7,41,40 (the known ones, then those listed, each once)", got)
	}
}
