package gateway_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
)

// errorPage is the JSON error page.
type errorPage struct {
	Status int      `json:"status"`
	Error  string   `json:"error"`
	Env    string   `json:"env"`
	Output []string `json:"output"`
}

func decodeErrorPage(t *testing.T, resp *http.Response) errorPage {
	t.Helper()
	var p errorPage
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatalf("error page (status %d): %v", resp.StatusCode, err)
	}
	return p
}

// TestAcquireErrorPages: each error the manager's Acquire returns becomes
// its page (status, kind, Retry-After, the dev server's output), as JSON
// and as HTML, and a failing env does not keep others from working.
func TestAcquireErrorPages(t *testing.T) {
	errs := map[string]error{
		"exits":    &lifecycle.StartError{Env: "exits", Reason: "the dev server exited with status 2", Tail: []string{"fatal: cannot read <config>.yml"}},
		"never":    &lifecycle.StartError{Env: "never", Reason: "not ready after 1.5s", Timeout: true, Tail: []string{"compiling..."}},
		"backoff":  &lifecycle.StartError{Env: "backoff", Reason: "it exited", RetryAt: time.Now().Add(time.Hour)},
		"full":     &lifecycle.CapacityError{Env: "full", Limit: "max_envs", Detail: "5 running", RetryAfter: 7 * time.Second},
		"stranger": lifecycle.ErrNotAllowed,
		"closing":  lifecycle.ErrClosed,
		"theirs":   fmt.Errorf("%w: %w", lifecycle.ErrNotOwner, errors.New("cluster: env is owned by another node (gw-b)")),
		"broken":   errors.New("lifecycle: state file: disk full"),
	}
	g := startFake(t, gwOptions{}, func(name string) *fakeEnv {
		if name == "nosuch" {
			return nil
		}
		return &fakeEnv{Err: errs[name]}
	})
	for _, tc := range []struct {
		env        string
		status     int
		kind       string
		retryAfter int // 0: no Retry-After
		output     string
	}{
		{"exits", 502, "start_failed", 0, "fatal: cannot read <config>.yml"},
		{"never", 504, "start_timeout", 0, "compiling..."},
		{"backoff", 502, "start_failed", 3600, ""},
		{"full", 503, "at_capacity", 7, ""},
		{"nosuch", 404, "unknown_env", 0, ""},
		{"stranger", 404, "no_such_env", 0, ""},
		{"closing", 503, "shutting_down", 1, ""},
		{"theirs", 503, "cluster_unavailable", 2, ""},
		{"broken", 500, "internal", 0, ""},
	} {
		t.Run(tc.env, func(t *testing.T) {
			resp := g.get(t, tc.env+".localhost", "/", "Accept", "application/json")
			p := decodeErrorPage(t, resp)
			if resp.StatusCode != tc.status || p.Status != tc.status || p.Error != tc.kind || p.Env != tc.env {
				t.Fatalf("got %d %+v, want %d %s", resp.StatusCode, p, tc.status, tc.kind)
			}
			if got := strings.Join(p.Output, "\n"); got != tc.output {
				t.Errorf("output %q, want %q", got, tc.output)
			}
			ra := resp.Header.Get("Retry-After")
			switch n, _ := strconv.Atoi(ra); {
			case tc.retryAfter == 0 && ra != "":
				t.Errorf("Retry-After %q, want none", ra)
			case tc.retryAfter != 0 && (n < tc.retryAfter-1 || n > tc.retryAfter+1):
				t.Errorf("Retry-After %q, want about %d", ra, tc.retryAfter)
			}
			html := g.get(t, tc.env+".localhost", "/", "Accept", "text/html")
			body := readAll(t, html.Body)
			if html.StatusCode != tc.status || !strings.Contains(html.Header.Get("Content-Type"), "text/html") ||
				!strings.Contains(body, tc.env) || !strings.Contains(body, htmlEscape(tc.output)) {
				t.Fatalf("HTML page: %d %q", html.StatusCode, body)
			}
			if ok := g.get(t, "healthy.localhost", "/healthz"); ok.StatusCode != 200 {
				t.Fatalf("healthy env: %d", ok.StatusCode)
			}
		})
	}
	if n := g.Fake.held.Load(); n != 0 {
		t.Fatalf("%d leases held after every response was read", n)
	}
}
