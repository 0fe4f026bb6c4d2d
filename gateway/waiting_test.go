package gateway_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/envgate/envgate/netns/netnstest/wait"
)

// browserHeaders are what a browser sends when it navigates.
var browserHeaders = []string{
	"Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
	"Sec-Fetch-Mode", "navigate",
	"Sec-Fetch-Dest", "document",
}

type startStatus struct {
	State     string   `json:"state"`
	ElapsedMS int64    `json:"elapsed_ms"`
	Output    []string `json:"output"`
	Error     string   `json:"error"`
	Message   string   `json:"message"`
}

func (g *gw) status(t *testing.T, env string) startStatus {
	t.Helper()
	resp := g.get(t, env+".localhost", gateway.StatusPath, "Accept", "application/json")
	var s startStatus
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || resp.StatusCode != 200 {
		t.Fatalf("status of %s: %d, %v", env, resp.StatusCode, err)
	}
	return s
}

// waitStatus polls env's status until done says so, for at most 30s,
// and returns every status seen.
func (g *gw) waitStatus(t *testing.T, env string, done func(startStatus) bool) []startStatus {
	t.Helper()
	var seen []startStatus
	if !wait.Until(30*time.Second, func() bool {
		seen = append(seen, g.status(t, env))
		return done(seen[len(seen)-1])
	}) {
		t.Fatalf("status of %s never settled: last %+v", env, seen[len(seen)-1])
	}
	return seen
}

func TestWaitingPage(t *testing.T) {
	slow := lifecycletest.Shell(`echo "compiling step 1"; sleep 1.5; exec "$DEMO"`, 20*time.Second)
	slow.Name, slow.Match = "slow", "slow*"
	boom := lifecycletest.Shell(`echo "boom: config missing"; sleep 1; exit 3`, 20*time.Second)
	boom.Name, boom.Match = "boom", "boom*"
	blocky := lifecycletest.Demo(lifecycletest.DemoOptions{BootDelay: 1500 * time.Millisecond})
	blocky.Name, blocky.Match = "blocky", "blocky*"
	for _, tm := range []*lifecycle.Template{slow, boom, blocky} {
		if err := tm.Prepare(); err != nil {
			t.Fatal(err)
		}
	}
	g := startGateway(t, gwOptions{Templates: []*lifecycle.Template{slow, boom, blocky},
		Settings: gateway.TemplateSettings{"blocky": {Waiting: gateway.WaitBlock}}})

	t.Run("follows the start, then the app", func(t *testing.T) {
		resp := g.get(t, "slow-nav.localhost", "/", browserHeaders...)
		body := readAll(t, resp.Body)
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "Starting <b>slow-nav</b>") ||
			resp.Header.Get(gateway.RequestIDHeader) == "" || !strings.Contains(body, resp.Header.Get(gateway.RequestIDHeader)) {
			t.Fatalf("navigation to a cold env: %d %v\n%s", resp.StatusCode, resp.Header, body)
		}
		seen := g.waitStatus(t, "slow-nav", func(s startStatus) bool { return s.State != "starting" })
		if last := seen[len(seen)-1]; last.State != "ready" {
			t.Fatalf("start ended %+v", last)
		}
		var progress bool
		for _, s := range seen {
			progress = progress || (s.ElapsedMS > 0 && strings.Contains(strings.Join(s.Output, "\n"), "compiling step 1"))
		}
		if !progress {
			t.Errorf("status never showed elapsed time and output while starting: %+v", seen)
		}
		resp = g.get(t, "slow-nav.localhost", "/", browserHeaders...)
		if body := readAll(t, resp.Body); resp.StatusCode != 200 || !strings.Contains(body, "<h1>slow-nav</h1>") {
			t.Fatalf("navigation once ready: %d\n%s", resp.StatusCode, body)
		}
	})

	t.Run("shows the failure", func(t *testing.T) {
		resp := g.get(t, "boom-nav.localhost", "/", browserHeaders...)
		if resp.StatusCode != 503 {
			t.Fatalf("navigation: %d, want the waiting page", resp.StatusCode)
		}
		seen := g.waitStatus(t, "boom-nav", func(s startStatus) bool { return s.State != "starting" })
		last := seen[len(seen)-1]
		if last.State != "failed" || last.Error != "start_failed" || !strings.Contains(last.Message, "did not start") ||
			!strings.Contains(strings.Join(last.Output, "\n"), "boom: config missing") {
			t.Fatalf("status after the failure: %+v", last)
		}
	})

	// Everything but a browser navigation waits and gets the answer,
	// marked cold.
	for _, tc := range []struct {
		name, env string
		headers   []string
	}{
		{"curl", "slow-curl", []string{"Accept", "*/*", "User-Agent", "curl/8.5.0"}},
		{"fetch of HTML", "slow-fetch", []string{"Accept", "text/html", "Sec-Fetch-Mode", "cors"}},
		{"template says block", "blocky-nav", browserHeaders},
	} {
		t.Run("blocks: "+tc.name, func(t *testing.T) {
			t.Parallel()
			resp := g.get(t, tc.env+".localhost", "/", tc.headers...)
			body := readAll(t, resp.Body)
			if resp.StatusCode != 200 || !strings.Contains(body, tc.env) {
				t.Fatalf("%d\n%s", resp.StatusCode, body)
			}
			cold, err := time.ParseDuration(resp.Header.Get(gateway.ColdStartHeader))
			if err != nil || cold < time.Second {
				t.Fatalf("%s: %q (%v), want the start's duration (> 1s)", gateway.ColdStartHeader, resp.Header.Get(gateway.ColdStartHeader), err)
			}
		})
	}
}

// The status endpoint belongs to the gateway on every env hostname and
// starts nothing.
func TestStatusStartsNothing(t *testing.T) {
	g := startFake(t, gwOptions{}, func(string) *fakeEnv { return &fakeEnv{} })
	if s := g.status(t, "idle-env"); s.State != "stopped" {
		t.Fatalf("status of a never-started env: %+v", s)
	}
	if n := g.Fake.acquires.Load(); n != 0 {
		t.Fatalf("status acquired an env %d times", n)
	}
	if r := g.get(t, "idle-env.localhost", "/healthz"); r.StatusCode != http.StatusOK {
		t.Fatal(r.Status)
	}
	if s := g.status(t, "idle-env"); s.State != "ready" {
		t.Fatalf("status of a running env: %+v", s)
	}
}
