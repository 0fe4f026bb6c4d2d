package demo

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestPageNamesEnvAndCountsVisits(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, Options{Name: "feature-x"})
	for want := 1; want <= 3; want++ {
		resp, body := get(t, ts.URL+"/", nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /: status %d", resp.StatusCode)
		}
		page := string(body)
		for _, s := range []string{"<h1>feature-x</h1>", strings.TrimPrefix(ts.URL, "http://"), ">" + strconv.Itoa(want) + "<"} {
			if !strings.Contains(page, s) {
				t.Errorf("visit %d: page lacks %q:\n%s", want, s, page)
			}
		}
		if got := resp.Header.Get("X-Envgate-Env"); got != "feature-x" {
			t.Errorf("X-Envgate-Env = %q, want feature-x", got)
		}
		if got := resp.Header.Get("X-Demo-Visits"); got != strconv.Itoa(want) {
			t.Errorf("X-Demo-Visits = %q, want %d", got, want)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("Content-Type = %q, want text/html", ct)
		}
	}
}

func TestPageJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		accept   string
		wantJSON bool
	}{
		{"application/json", true},
		{"application/json; charset=utf-8", true},
		{"text/plain, application/json;q=0.9", true},
		{"", false},
		{"*/*", false},
		{"text/html", false},
		{"text/html, application/json", false},
		{"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", false},
	}
	ts := newTestServer(t, Options{Name: "feature-x"})
	for _, tt := range tests {
		t.Run(tt.accept, func(t *testing.T) {
			resp, body := get(t, ts.URL+"/", http.Header{"Accept": {tt.accept}})
			isJSON := strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json")
			if isJSON != tt.wantJSON {
				t.Fatalf("Accept %q: Content-Type %q, want JSON %v", tt.accept, resp.Header.Get("Content-Type"), tt.wantJSON)
			}
			if !isJSON {
				return
			}
			var got Page
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("decode %s: %v", body, err)
			}
			visits, _ := strconv.ParseUint(resp.Header.Get("X-Demo-Visits"), 10, 64)
			want := Page{Env: "feature-x", Host: strings.TrimPrefix(ts.URL, "http://"), Visits: visits, PID: os.Getpid()}
			if got != want || visits == 0 {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	// Not parallel: t.Setenv.
	tests := []struct {
		name, envVar, host, want string
	}{
		{"from-option", "from-var", "from-host.localhost", "from-option"},
		{"", "from-var", "from-host.localhost", "from-var"},
		{"", "", "feature-x.localhost:8080", "feature-x"},
		{"", "", "Feature-X.dev.example.com", "feature-x"},
		{"", "", "localhost", "localhost"},
		{"", "", "127.0.0.1:8080", "unknown"},
		{"", "", "[::1]:80", "unknown"},
		{"", "", "", "unknown"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s/%s", tt.name, tt.envVar, tt.host), func(t *testing.T) {
			t.Setenv(EnvNameVar, tt.envVar)
			h, err := Handler(Options{Name: tt.name})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.Host = tt.host
			req.Header.Set("Accept", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			var got Page
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("decode %s: %v", rec.Body, err)
			}
			if got.Env != tt.want || rec.Header().Get("X-Envgate-Env") != tt.want {
				t.Errorf("env = %q, header %q; want %q", got.Env, rec.Header().Get("X-Envgate-Env"), tt.want)
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, Options{})
	resp, body := get(t, ts.URL+"/healthz", nil)
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Errorf("GET /healthz = %d %q, want 200 \"ok\"", resp.StatusCode, body)
	}
}

func TestUnknownPathsAndMethods(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, Options{})
	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/nope", http.StatusNotFound},
		{http.MethodGet, "/favicon.ico", http.StatusNotFound},
		{http.MethodGet, "/healthz/x", http.StatusNotFound},
		{http.MethodPost, "/", http.StatusMethodNotAllowed},
		{http.MethodGet, "/upload", http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(tt.method, ts.URL+tt.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp, _ := do(t, req); resp.StatusCode != tt.want {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.path, resp.StatusCode, tt.want)
		}
	}
}

func TestEchoReportsRequest(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, Options{Name: "feature-x"})
	const bodyLen = 3 << 20
	req, err := http.NewRequest(http.MethodPost, ts.URL+"/echo?a=1&b=2", strings.NewReader(strings.Repeat("x", bodyLen)))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "feature-x.localhost"
	req.Header.Set("X-Forwarded-For", "192.0.2.7")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Add("X-Multi", "one")
	req.Header.Add("X-Multi", "two")
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /echo: %d %s", resp.StatusCode, body)
	}
	var got EchoResponse
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	if got.Env != "feature-x" || got.Method != http.MethodPost || got.Path != "/echo" || got.Query != "a=1&b=2" ||
		got.Host != "feature-x.localhost" || got.BodyBytes != bodyLen || got.ContentLength != bodyLen {
		t.Errorf("echo = %+v", got)
	}
	checks := map[string][]string{
		"X-Forwarded-For":   {"192.0.2.7"},
		"X-Forwarded-Proto": {"https"},
		"X-Multi":           {"one", "two"},
	}
	for k, want := range checks {
		if g := strings.Join(got.Headers[k], ","); g != strings.Join(want, ",") {
			t.Errorf("header %s = %q, want %q", k, g, want)
		}
	}
}

func TestVisitsPersistAcrossInstances(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data") // created by the server
	visit := func(url string) string {
		resp, _ := get(t, url+"/", nil)
		return resp.Header.Get("X-Demo-Visits")
	}

	first := newTestServer(t, Options{DataDir: dir})
	visit(first.URL)
	if got := visit(first.URL); got != "2" {
		t.Fatalf("second visit counted %s, want 2", got)
	}
	first.Close()

	second := newTestServer(t, Options{DataDir: dir})
	if got := visit(second.URL); got != "3" {
		t.Fatalf("new Handler on the same DataDir counted %s, want 3", got)
	}
	second.Close()

	run := startRun(t, Options{DataDir: dir})
	if got := visit("http://" + run.addr); got != "4" {
		t.Fatalf("Run on the same DataDir counted %s, want 4", got)
	}

	data, err := os.ReadFile(filepath.Join(dir, visitsFile))
	if err != nil || string(data) != "4\n" {
		t.Errorf("visits file = %q, %v; want \"4\\n\"", data, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Errorf("data dir holds %v (%v), want only %s: a temp file leaked", entries, err, visitsFile)
	}
}

func TestVisitsInMemoryWithoutDataDir(t *testing.T) {
	t.Parallel()
	for i := range 2 {
		ts := newTestServer(t, Options{})
		if resp, _ := get(t, ts.URL+"/", nil); resp.Header.Get("X-Demo-Visits") != "1" {
			t.Errorf("instance %d: first visit counted %s, want 1", i, resp.Header.Get("X-Demo-Visits"))
		}
	}
}

func TestVisitsConcurrent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := newTestServer(t, Options{DataDir: dir})
	const n = 40
	counts := make(chan string, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			resp, err := http.Get(ts.URL + "/")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			counts <- resp.Header.Get("X-Demo-Visits")
		})
	}
	wg.Wait()
	close(counts)
	seen := map[string]bool{}
	for c := range counts {
		if seen[c] {
			t.Errorf("count %s served twice", c)
		}
		seen[c] = true
	}
	for i := 1; i <= n; i++ {
		if !seen[strconv.Itoa(i)] {
			t.Errorf("count %d never served", i)
		}
	}
	if data, err := os.ReadFile(filepath.Join(dir, visitsFile)); err != nil || string(data) != fmt.Sprintf("%d\n", n) {
		t.Errorf("visits file = %q, %v; want %d", data, err, n)
	}
}

func TestVisitsCorruptFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, visitsFile), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Handler(Options{DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), "delete it") {
		t.Errorf("Handler with a corrupt counter: err = %v, want one saying to delete the file", err)
	}
}

func TestVisitsStoreFailureIsNotCounted(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	ts := newTestServer(t, Options{DataDir: dir})
	// Root ignores permissions, so fail the write by removing the dir.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, ts.URL+"/", nil); resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("visit with the data dir gone: status %d, want 500", resp.StatusCode)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, ts.URL+"/", nil); resp.Header.Get("X-Demo-Visits") != "1" {
		t.Errorf("visit after recovery counted %s, want 1 (the failed one must not count)", resp.Header.Get("X-Demo-Visits"))
	}
}

func TestStaleTempFilesRemoved(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stale := filepath.Join(dir, ".visits-123.tmp")
	if err := os.WriteFile(stale, []byte("7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Handler(Options{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale temp file still there: %v", err)
	}
}
