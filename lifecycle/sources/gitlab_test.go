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

// TestGitLabEnvironment: the merge request's environment is made with
// the env's URL, updated, stopped on destroy; the note is made once then
// edited; every call carries the token and the escaped project path.
func TestGitLabEnvironment(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	envID := int64(0)
	note := ""
	done := make(chan struct{}, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, r.Method+" "+r.URL.EscapedPath()+" "+string(b))
		if r.Header.Get("PRIVATE-TOKEN") != "tok" {
			w.WriteHeader(401)
			return
		}
		p := strings.TrimPrefix(r.URL.EscapedPath(), "/api/v4/projects/acme%2Fapp")
		switch {
		case r.Method == "GET" && p == "/environments":
			out := []map[string]any{}
			if envID != 0 {
				out = append(out, map[string]any{"id": envID, "name": "preview/feature-x"})
			}
			json.NewEncoder(w).Encode(out)
		case r.Method == "POST" && p == "/environments":
			envID = 42
			w.WriteHeader(201)
			w.Write([]byte(`{"id": 42}`))
			done <- struct{}{}
		case r.Method == "PUT" && p == "/environments/42":
			w.Write([]byte(`{}`))
			done <- struct{}{}
		case r.Method == "POST" && p == "/environments/42/stop":
			w.Write([]byte(`{}`))
			done <- struct{}{}
		case r.Method == "GET" && p == "/merge_requests/3/notes":
			out := []map[string]any{}
			if note != "" {
				out = append(out, map[string]any{"id": 7, "body": note})
			}
			json.NewEncoder(w).Encode(out)
		case (r.Method == "POST" && p == "/merge_requests/3/notes") || (r.Method == "PUT" && p == "/merge_requests/3/notes/7"):
			var in map[string]string
			json.Unmarshal(b, &in)
			note = in["body"]
			w.Write([]byte(`{"id": 7}`))
			done <- struct{}{}
		default:
			w.WriteHeader(404)
		}
	}))
	t.Cleanup(srv.Close)
	g := NewGitLab(srv.URL+"/api/v4", "acme/app", "tok", zerolog.Nop())
	g.firstWait = time.Millisecond
	t.Cleanup(g.Close)
	g.Deployed("feature-x", "abc", "https://feature-x.example.test/")
	g.Comment(3, "first")
	g.Deployed("feature-x", "def", "https://feature-x.example.test/")
	g.Comment(3, "second")
	g.Destroyed("feature-x", nil)
	for range 5 {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			mu.Lock()
			t.Fatalf("API calls not done; calls so far: %v", calls)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	var got []string
	for _, c := range calls {
		if !strings.HasPrefix(c, "GET") {
			got = append(got, c)
		}
	}
	want := []string{
		`POST /api/v4/projects/acme%2Fapp/environments {"external_url":"https://feature-x.example.test/","name":"preview/feature-x"}`,
		`POST /api/v4/projects/acme%2Fapp/merge_requests/3/notes {"body":"` + jsonEscape(CommentMarker) + `\nfirst"}`,
		`PUT /api/v4/projects/acme%2Fapp/environments/42 {"external_url":"https://feature-x.example.test/"}`,
		`PUT /api/v4/projects/acme%2Fapp/merge_requests/3/notes/7 {"body":"` + jsonEscape(CommentMarker) + `\nsecond"}`,
		`POST /api/v4/projects/acme%2Fapp/environments/42/stop `,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func jsonEscape(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}
