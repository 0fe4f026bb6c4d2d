package gateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
)

func readAll(t *testing.T, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestFirstRequestStartsEnvInItsOwnNamespace(t *testing.T) {
	g := startGateway(t, gwOptions{})
	resp := g.get(t, "feature-x.localhost:8080", "/")
	body := readAll(t, resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(body, "feature-x") {
		t.Fatalf("status %d, body %q: want the demo page naming feature-x", resp.StatusCode, body)
	}
	if resp.Header.Get("Envgate-Cold-Start") == "" {
		t.Error("cold response lacks Envgate-Cold-Start")
	}
	resp = g.get(t, "feature-x.localhost:8080", "/", "Accept", "application/json")
	var page struct {
		Env string `json:"env"`
		PID int    `json:"pid"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || page.Env != "feature-x" {
		t.Fatalf("json page %+v, %v", page, err)
	}
	if resp.Header.Get("Envgate-Cold-Start") != "" {
		t.Error("warm response carries Envgate-Cold-Start")
	}
	theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", page.PID))
	if err != nil {
		t.Fatal(err)
	}
	ours, _ := os.Readlink("/proc/self/ns/net")
	if theirs == ours {
		t.Fatalf("dev server runs in the gateway's namespace %s", ours)
	}
}

func TestConcurrentFirstRequestsOneStart(t *testing.T) {
	g := startGateway(t, gwOptions{Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{BootDelay: 300 * time.Millisecond})}})
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			resp, err := g.Client.Get("http://herd.localhost/")
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !strings.Contains(string(b), "herd") {
				errs <- fmt.Errorf("status %d body %.100q", resp.StatusCode, b)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if c := g.Net.Creates.Load(); c != 1 {
		t.Fatalf("%d namespaces created, want 1", c)
	}
	ids, _ := g.NS.List()
	if len(ids) != 1 {
		t.Fatalf("namespaces %v, want one", ids)
	}
	pids, err := netns.PidsIn(netns.RunDir + "/" + g.NS.Prefix() + "-herd")
	if err != nil || len(pids) != 1 {
		t.Fatalf("dev-server processes %v (%v), want exactly one", pids, err)
	}
}

// Both envs listen on port 3000 in their own namespaces; from inside A,
// B's address is unreachable.
func TestEnvsAreIsolated(t *testing.T) {
	g := startGateway(t, gwOptions{})
	for _, env := range []string{"env-a", "env-b"} {
		resp := g.get(t, env+".localhost", "/", "Accept", "application/json")
		if body := readAll(t, resp.Body); !strings.Contains(body, `"env":"`+env+`"`) {
			t.Fatalf("%s answered %q", env, body)
		}
	}
	infos := map[string]lifecycle.Info{}
	for _, in := range g.Envs.List() {
		infos[in.Name] = in
	}
	a, b := infos["env-a"], infos["env-b"]
	if a.Addr.Port() != 3000 || b.Addr.Port() != 3000 || a.Addr.Addr() == b.Addr.Addr() {
		t.Fatalf("addresses %v and %v: want distinct addresses, same port 3000", a.Addr, b.Addr)
	}
	// A second handle on A's namespace, through a manager of its own, to
	// run a dial inside A.
	peek, err := netns.New(netns.Config{Prefix: g.NS.Prefix(), Pool: netnstest.Pool(2)})
	if err != nil {
		t.Fatal(err)
	}
	sbA, err := peek.Adopt("env-a")
	if err != nil {
		t.Fatal(err)
	}
	defer sbA.Close()
	var dialErr error
	sbA.Do(func() error {
		c, err := net.DialTimeout("tcp", b.Addr.String(), time.Second)
		if err == nil {
			c.Close()
		}
		dialErr = err
		return nil
	})
	if dialErr == nil {
		t.Fatal("a process in env-a connected to env-b")
	}
}

func TestStartFailurePages(t *testing.T) {
	exits := lifecycletest.Shell(`echo "fatal: cannot read config.yml" >&2; exit 2`, 10*time.Second)
	exits.Match = "exits"
	never := lifecycletest.Shell(`echo "compiling..."; exec sleep 1000`, 1500*time.Millisecond)
	never.Match = "never"
	wrong := lifecycletest.Demo(lifecycletest.DemoOptions{ListenPort: 3001, Timeout: 1500 * time.Millisecond})
	wrong.Match = "wrong"
	// Browsers, too, wait for the start and get the error page; with the
	// default (page) they would follow the retried start on the waiting
	// page instead (see waiting_test.go).
	blocking := gateway.TemplateSettings{}
	for _, tm := range []*lifecycle.Template{exits, never, wrong} {
		tm.Name = tm.Match
		blocking[tm.Name] = gateway.EnvSettings{Waiting: gateway.WaitBlock}
		if err := tm.Prepare(); err != nil {
			t.Fatal(err)
		}
	}
	g := startGateway(t, gwOptions{Templates: []*lifecycle.Template{exits, never, wrong, lifecycletest.Demo(lifecycletest.DemoOptions{})},
		Settings: blocking})
	for _, tc := range []struct {
		env    string
		status int
		kind   string
		output string
	}{
		{"exits", 502, "start_failed", "fatal: cannot read config.yml"},
		{"never", 504, "start_timeout", "compiling..."},
		{"wrong", 504, "start_timeout", "listening on [::]:3001"},
	} {
		t.Run(tc.env, func(t *testing.T) {
			resp := g.get(t, tc.env+".localhost", "/", "Accept", "application/json")
			p := decodeErrorPage(t, resp)
			if resp.StatusCode != tc.status || p.Error != tc.kind || p.Env != tc.env {
				t.Fatalf("got %d %+v, want %d %s", resp.StatusCode, p, tc.status, tc.kind)
			}
			if !strings.Contains(strings.Join(p.Output, "\n"), tc.output) {
				t.Fatalf("output tail %q lacks %q", p.Output, tc.output)
			}
			html := g.get(t, tc.env+".localhost", "/", "Accept", "text/html")
			body := readAll(t, html.Body)
			if html.StatusCode != tc.status || !strings.Contains(html.Header.Get("Content-Type"), "text/html") ||
				!strings.Contains(body, tc.env) || !strings.Contains(body, htmlEscape(tc.output)) {
				t.Fatalf("HTML page: %d %q", html.StatusCode, body)
			}
			// Other envs keep working.
			ok := g.get(t, "healthy.localhost", "/healthz")
			if ok.StatusCode != 200 {
				t.Fatalf("healthy env: %d", ok.StatusCode)
			}
		})
	}
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;").Replace(s)
}

// TestInvalidHostsCreateNothing: a Host that is not one valid label under
// a configured domain gets a 4xx before the manager is asked for anything.
func TestInvalidHostsCreateNothing(t *testing.T) {
	g := startFake(t, gwOptions{}, func(string) *fakeEnv { return &fakeEnv{} })
	for _, host := range []string{
		"127.0.0.1", "[::1]:8080", "localhost", "a.b.localhost", "a..localhost", "a_b.localhost",
		strings.Repeat("a", 64) + ".localhost", "xn--a.localhost", "-x.localhost", "x.example.org",
	} {
		req, _ := http.NewRequest("GET", "http://placeholder/", nil)
		req.Host = host
		resp, err := g.Client.Do(req)
		if err != nil {
			t.Fatalf("%q: %v", host, err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode > 499 {
			t.Errorf("Host %q: status %d, want 4xx", host, resp.StatusCode)
		}
	}
	// A request without any Host header at all (HTTP/1.0).
	c, err := net.Dial("tcp", g.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line := make([]byte, 12)
	io.ReadFull(c, line)
	if !strings.HasPrefix(string(line), "HTTP/1.0 400") && !strings.HasPrefix(string(line), "HTTP/1.1 400") {
		t.Errorf("no Host: got %q, want 400", line)
	}
	if got := g.Fake.acquired(); len(got) != 0 {
		t.Fatalf("invalid hosts acquired envs %q", got)
	}
}
