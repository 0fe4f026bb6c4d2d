package gateway_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/lifecycle"
)

// TestWaitingPageFollowsStart is the waiting page's logic, with starts
// the test ends when it likes (TestWaitingPage runs real ones): a browser
// navigation to an env that is not ready gets the page; the status path
// reports the start and its output, then its end; everything but a
// navigation waits for the start and gets the answer, marked cold; the
// status path starts nothing.
func TestWaitingPageFollowsStart(t *testing.T) {
	slow := &fakeEnv{Started: make(chan struct{}), Output: []string{"compiling step 1"}, Waiting: make(chan struct{}, 10)}
	boom := &fakeEnv{Started: make(chan struct{}), Output: []string{"boom: config missing"},
		Err: &lifecycle.StartError{Env: "boom", Reason: "the dev server exited with status 3", Tail: []string{"boom: config missing"}}}
	g := startFake(t, gwOptions{Config: func(c *gateway.Config) { c.WaitingPageAfter = time.Millisecond }},
		func(name string) *fakeEnv {
			switch name {
			case "slow":
				return slow
			case "boom":
				return boom
			}
			return &fakeEnv{}
		})

	if s := g.status(t, "slow"); s.State != "stopped" || g.Fake.acquires.Load() != 0 {
		t.Fatalf("status of a never-started env: %+v, %d acquires", s, g.Fake.acquires.Load())
	}

	resp := g.get(t, "slow.localhost", "/", browserHeaders...)
	body := readAll(t, resp.Body)
	id := resp.Header.Get(gateway.RequestIDHeader)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "Starting <b>slow</b>") ||
		id == "" || !strings.Contains(body, id) || !strings.Contains(body, "compiling step 1") {
		t.Fatalf("navigation to a starting env: %d %v\n%s", resp.StatusCode, resp.Header, body)
	}
	<-slow.Waiting // the navigation's Acquire, cut short for the page
	if s := g.status(t, "slow"); s.State != "starting" || strings.Join(s.Output, "\n") != "compiling step 1" {
		t.Fatalf("status while starting: %+v", s)
	}

	// Everything but a navigation waits for the start.
	type answer struct {
		status int
		cold   string
		body   string
	}
	answers := make(chan answer, 2)
	for _, headers := range [][]string{
		{"Accept", "*/*", "User-Agent", "curl/8.5.0"},
		{"Accept", "text/html", "Sec-Fetch-Mode", "cors"},
	} {
		req, err := http.NewRequest("GET", "http://slow.localhost/", nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		go func() {
			resp, err := g.Client.Do(req)
			if err != nil {
				answers <- answer{status: -1, body: err.Error()}
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			answers <- answer{resp.StatusCode, resp.Header.Get(gateway.ColdStartHeader), string(b)}
		}()
	}
	<-slow.Waiting
	<-slow.Waiting
	close(slow.Started)
	for range 2 {
		a := <-answers
		if cold, err := time.ParseDuration(a.cold); a.status != 200 || !strings.Contains(a.body, "slow") || err != nil || cold <= 0 {
			t.Errorf("request that waited for the start: %d %s %q", a.status, a.cold, a.body)
		}
	}
	if s := g.status(t, "slow"); s.State != "ready" {
		t.Fatalf("status once started: %+v", s)
	}
	resp = g.get(t, "slow.localhost", "/", browserHeaders...)
	if body := readAll(t, resp.Body); resp.StatusCode != 200 || !strings.Contains(body, "<h1>slow</h1>") {
		t.Fatalf("navigation once ready: %d\n%s", resp.StatusCode, body)
	}

	// A start that fails: the page, then the failure in the status.
	if resp := g.get(t, "boom.localhost", "/", browserHeaders...); resp.StatusCode != 503 {
		t.Fatalf("navigation to a starting env: %d, want the waiting page", resp.StatusCode)
	}
	close(boom.Started)
	s := g.status(t, "boom")
	if s.State != "failed" || s.Error != "start_failed" || !strings.Contains(s.Message, "did not start") ||
		strings.Join(s.Output, "\n") != "boom: config missing" {
		t.Fatalf("status after the failure: %+v", s)
	}
}
