package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
)

// fakeEnvs is an Envs with one env, "web", whose log file is in a temp dir.
type fakeEnvs struct {
	mu       sync.Mutex
	envs     map[string]*lifecycle.EnvDetail
	logDir   string
	stopped  []string
	restarts int
}

func newFake(t *testing.T) *fakeEnvs {
	f := &fakeEnvs{logDir: t.TempDir(), envs: map[string]*lifecycle.EnvDetail{}}
	f.envs["web"] = &lifecycle.EnvDetail{Info: lifecycle.Info{Name: "web", Template: "demo", State: lifecycle.Ready,
		Addr: netip.MustParseAddrPort("10.213.0.2:3000"), Pid: 42, InFlight: 1, StartedAt: time.Now().Add(-time.Minute),
		LastActive: time.Now()}, Requests: 7, MemoryBytes: 1 << 20, LastStart: 120 * time.Millisecond}
	return f
}

func (f *fakeEnvs) Details() []lifecycle.EnvDetail {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []lifecycle.EnvDetail
	for _, d := range f.envs {
		out = append(out, *d)
	}
	return out
}

func (f *fakeEnvs) Detail(name string) (lifecycle.EnvDetail, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.envs[name]
	if !ok {
		return lifecycle.EnvDetail{}, false
	}
	return *d, true
}

func (f *fakeEnvs) Stop(name, _ string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.envs[name]
	if !ok || d.State != lifecycle.Ready {
		return false
	}
	d.State, d.Pid = lifecycle.Stopped, 0
	f.stopped = append(f.stopped, name)
	return true
}

func (f *fakeEnvs) Restart(_ context.Context, name string) (lifecycle.EnvDetail, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.envs[name]
	if !ok {
		return lifecycle.EnvDetail{}, fmt.Errorf("%w: %s", lifecycle.ErrNoTemplate, name)
	}
	f.restarts++
	d.State, d.Pid = lifecycle.Ready, 100+f.restarts
	return *d, nil
}

func (f *fakeEnvs) Destroy(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if name == "busy" {
		return fmt.Errorf("%w: busy is starting", lifecycle.ErrBusy)
	}
	delete(f.envs, name)
	return os.Remove(f.LogFile(name))
}

func (f *fakeEnvs) Tail(string, int) []string { return []string{"a", "b"} }
func (f *fakeEnvs) LogFile(name string) string {
	return filepath.Join(f.logDir, name+".log")
}
func (f *fakeEnvs) Limits() lifecycle.Limits { return lifecycle.Limits{MaxEnvs: 10, MaxStarting: 2} }

func logLine(t time.Time, s string) string {
	return t.UTC().Format(lifecycle.LogTimeFormat) + " " + s + "\n"
}

func do(t *testing.T, h http.Handler, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	r := httptest.NewRequest(method, path, nil)
	if method != "GET" {
		r.Header.Set(ActionHeader, "1")
	}
	h.ServeHTTP(w, r)
	return w
}

func decode[T any](t *testing.T, w *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("%s: %v", w.Body, err)
	}
	return v
}

func TestEndpoints(t *testing.T) {
	f := newFake(t)
	h := New(Config{Envs: f, Version: "v1.2.3", Revision: "abc"})

	if w := do(t, h, "GET", "/healthz"); w.Code != 200 {
		t.Errorf("healthz: %d", w.Code)
	}
	envs := decode[[]Env](t, do(t, h, "GET", "/v1/envs"))
	if len(envs) != 1 || envs[0].Name != "web" || envs[0].Pid != 42 || envs[0].Requests != 7 ||
		envs[0].Addr != "10.213.0.2:3000" || envs[0].LastStartSeconds != 0.12 || envs[0].State != "ready" {
		t.Errorf("list: %+v", envs)
	}
	if w := do(t, h, "GET", "/v1/envs/nope"); w.Code != 404 {
		t.Errorf("unknown env: %d", w.Code)
	}
	if w := do(t, h, "GET", "/v1/envs/..%2f..%2fetc"); w.Code != 400 {
		t.Errorf("bad name: %d %s", w.Code, w.Body)
	}
	st := decode[Status](t, do(t, h, "GET", "/v1/status"))
	if st.Version != "v1.2.3" || st.Envs != 1 || st.ByState["ready"] != 1 || st.Limits.MaxEnvs != 10 || st.InFlight != 1 {
		t.Errorf("status: %+v", st)
	}

	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", "/v1/envs/web/stop", nil))
	if w.Code != http.StatusForbidden || len(f.stopped) != 0 {
		t.Errorf("POST without %s: %d, stopped %v", ActionHeader, w.Code, f.stopped)
	}
	r := decode[ActionResult](t, do(t, h, "POST", "/v1/envs/web/stop"))
	if !r.Changed || len(f.stopped) != 1 {
		t.Errorf("stop: %+v, stopped %v", r, f.stopped)
	}
	if r := decode[ActionResult](t, do(t, h, "POST", "/v1/envs/web/stop")); r.Changed {
		t.Errorf("second stop changed something")
	}
	if w := do(t, h, "GET", "/v1/envs/web/stop"); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET stop: %d", w.Code)
	}
	e := decode[Env](t, do(t, h, "POST", "/v1/envs/web/restart"))
	if e.Pid != 101 || e.State != "ready" {
		t.Errorf("restart: %+v", e)
	}
	if w := do(t, h, "POST", "/v1/envs/nope/restart"); w.Code != 404 {
		t.Errorf("restart unknown: %d", w.Code)
	}
	if w := do(t, h, "POST", "/v1/envs/busy/destroy"); w.Code != http.StatusConflict {
		t.Errorf("destroy busy: %d", w.Code)
	}
	os.WriteFile(f.LogFile("web"), []byte("x\n"), 0o600)
	if w := do(t, h, "DELETE", "/v1/envs/web"); w.Code != 200 {
		t.Errorf("destroy: %d %s", w.Code, w.Body)
	}
	if _, err := os.Stat(f.LogFile("web")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("log file after destroy: %v", err)
	}

	if w := do(t, h, "POST", "/v1/reload"); w.Code != http.StatusNotImplemented {
		t.Errorf("reload without a reload path: %d", w.Code)
	}
	reloaded := false
	h2 := New(Config{Envs: f, Reload: func() error { reloaded = true; return nil }})
	if w := do(t, h2, "POST", "/v1/reload"); w.Code != http.StatusAccepted || !reloaded {
		t.Errorf("reload: %d, called %v", w.Code, reloaded)
	}
}

func TestLogsSinceAndTail(t *testing.T) {
	f := newFake(t)
	h := New(Config{Envs: f})
	now := time.Now()
	content := logLine(now.Add(-time.Hour), "old") + logLine(now.Add(-5*time.Minute), "recent1") +
		logLine(now.Add(-time.Minute), "recent2") + "2026-partial"
	os.WriteFile(f.LogFile("web"), []byte(content), 0o600)
	body := func(q string) string { return do(t, h, "GET", "/v1/envs/web/logs"+q).Body.String() }
	if got := body(""); strings.Count(got, "\n") != 3 || strings.Contains(got, "partial") {
		t.Errorf("all: %q", got)
	}
	if got := body("?since=10m"); strings.Contains(got, "old") || !strings.Contains(got, "recent1") || !strings.Contains(got, "recent2") {
		t.Errorf("since 10m: %q", got)
	}
	if got := body("?tail=1"); !strings.HasSuffix(got, "recent2\n") || strings.Count(got, "\n") != 1 {
		t.Errorf("tail 1: %q", got)
	}
	if w := do(t, h, "GET", "/v1/envs/web/logs?since=yesterday"); w.Code != 400 {
		t.Errorf("bad since: %d", w.Code)
	}
	if w := do(t, h, "GET", "/v1/envs/nope/logs"); w.Code != 404 {
		t.Errorf("no logs: %d", w.Code)
	}
}

// TestLogsFollow streams lines written after the request began, across a
// rotation (the file renamed and a new one made).
func TestLogsFollow(t *testing.T) {
	f := newFake(t)
	srv := httptest.NewServer(New(Config{Envs: f}))
	defer srv.Close()
	path := f.LogFile("web")
	os.WriteFile(path, []byte(logLine(time.Now(), "before")), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/envs/web/logs?follow=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	next := func() string {
		t.Helper()
		if !sc.Scan() {
			t.Fatalf("stream ended: %v", sc.Err())
		}
		return sc.Text()
	}
	if l := next(); !strings.HasSuffix(l, "before") {
		t.Fatalf("first line %q", l)
	}
	appendLine := func(s string) {
		lf, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		lf.WriteString(logLine(time.Now(), s))
		lf.Close()
	}
	appendLine("after")
	if l := next(); !strings.HasSuffix(l, "after") {
		t.Fatalf("followed line %q", l)
	}
	appendLine("last in old file")
	os.Rename(path, path+".1")
	appendLine("in new file")
	for _, want := range []string{"last in old file", "in new file"} {
		if l := next(); !strings.HasSuffix(l, want) {
			t.Fatalf("got %q, want %q", l, want)
		}
	}
}

func TestTokenRequired(t *testing.T) {
	h := RequireToken("0123456789abcdef0123", New(Config{Envs: newFake(t)}))
	if w := do(t, h, "GET", "/v1/envs"); w.Code != 401 {
		t.Errorf("no token: %d", w.Code)
	}
	req := httptest.NewRequest("GET", "/v1/envs", nil)
	req.Header.Set("Authorization", "Bearer wrong")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 401 {
		t.Errorf("wrong token: %d", w.Code)
	}
	req.Header.Set("Authorization", "Bearer 0123456789abcdef0123")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 200 {
		t.Errorf("right token: %d", w.Code)
	}
	if w := do(t, h, "GET", "/healthz"); w.Code != 200 {
		t.Errorf("healthz without token: %d", w.Code)
	}
	if w := do(t, h, "GET", "/"); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/login" {
		t.Errorf("dashboard without token: %d %q", w.Code, w.Header().Get("Location"))
	}
	// A browser logs in with the token and gets it as a cookie.
	bad := httptest.NewRequest("POST", "/login", strings.NewReader("token=nope"))
	bad.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, bad)
	if w.Code != 401 || len(w.Result().Cookies()) != 0 {
		t.Errorf("login with a wrong token: %d, cookies %v", w.Code, w.Result().Cookies())
	}
	good := httptest.NewRequest("POST", "/login", strings.NewReader("token=0123456789abcdef0123"))
	good.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, good)
	cs := w.Result().Cookies()
	if w.Code != http.StatusSeeOther || len(cs) != 1 || !cs[0].HttpOnly || cs[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("login: %d, cookies %v", w.Code, cs)
	}
	req = httptest.NewRequest("GET", "/v1/envs", nil)
	req.AddCookie(cs[0])
	w = httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 200 {
		t.Errorf("with the login cookie: %d", w.Code)
	}
}

func TestReadToken(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(p, []byte("short\n"), 0o600)
	if _, err := ReadToken(p); err == nil {
		t.Error("short token accepted")
	}
	os.WriteFile(p, []byte(" 0123456789abcdef0123\n"), 0o644)
	os.Chmod(p, 0o644)
	if _, err := ReadToken(p); err == nil {
		t.Error("world-readable token file accepted")
	}
	os.Chmod(p, 0o600)
	if tok, err := ReadToken(p); err != nil || tok != "0123456789abcdef0123" {
		t.Errorf("token %q, %v", tok, err)
	}
}
