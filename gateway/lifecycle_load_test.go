package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/envgate/envgate/netns/netnstest/wait"
)

func envState(g *gw, name string) lifecycle.Info {
	for _, in := range g.Envs.List() {
		if in.Name == name {
			return in
		}
	}
	return lifecycle.Info{Name: name, State: lifecycle.Stopped}
}

func waitEnvState(t *testing.T, g *gw, name string, want lifecycle.State) {
	t.Helper()
	wait.For(t, 30*time.Second, fmt.Sprintf("env %s %v", name, want), func() bool { return envState(g, name).State == want })
}

// An open WebSocket is activity for as long as it is open, however
// silent: the gateway holds the env's lease until the connection closes.
func TestOpenWebSocketKeepsEnvFromIdleReap(t *testing.T) {
	const idle = 300 * time.Millisecond
	g := startGateway(t, gwOptions{
		Templates:    []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{Idle: idle})},
		ReapInterval: 20 * time.Millisecond,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://chatty.localhost/ws", &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: g.Client.Transport},
	})
	if err != nil {
		t.Fatalf("dial websocket through the gateway: %v", err)
	}
	defer c.CloseNow()
	time.Sleep(3 * idle) // silent, many reaper passes
	if in := envState(g, "chatty"); in.State != lifecycle.Ready || in.InFlight != 1 {
		t.Fatalf("env with an open websocket: %v with %d in flight, want ready with 1", in.State, in.InFlight)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.Read(ctx); err != nil || string(msg) != "still here" {
		t.Fatalf("echo after 3× idle: %q, %v", msg, err)
	}
	if n := g.Net.Creates.Load(); n != 1 {
		t.Fatalf("%d starts, want 1: the env was restarted under the websocket", n)
	}
	c.Close(websocket.StatusNormalClosure, "done")
	waitEnvState(t, g, "chatty", lifecycle.Stopped)
}

// Requests that land around the idle deadline, before, during and after
// the reaper's stop, all get answered: a request that finds its env
// stopping waits for the stop and starts it again.
func TestRequestsAroundIdleDeadlineGetNo5xx(t *testing.T) {
	const (
		idle   = 100 * time.Millisecond
		bursts = 80
		width  = 25 // requests per burst: 2,000 in all
	)
	g := startGateway(t, gwOptions{
		Templates:    []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{Idle: idle})},
		ReapInterval: 5 * time.Millisecond,
	})
	statuses := map[int]int{}
	var mu sync.Mutex
	for range bursts {
		var wg sync.WaitGroup
		for range width {
			wg.Go(func() {
				req, _ := http.NewRequest("GET", "http://racy.localhost/", nil)
				resp, err := g.Client.Do(req)
				code := -1
				if err == nil {
					code = resp.StatusCode
					resp.Body.Close()
				}
				mu.Lock()
				statuses[code]++
				mu.Unlock()
			})
		}
		wg.Wait()
		// Land the next burst within ±25ms of the idle deadline: the
		// reaper (every 5ms) is about to stop, stopping, or done.
		time.Sleep(idle + time.Duration(rand.IntN(50)-25)*time.Millisecond)
	}
	if statuses[200] != bursts*width {
		t.Fatalf("statuses %v, want all %d requests 200", statuses, bursts*width)
	}
	// The deadline was really crossed: some bursts found the env reaped.
	if n := g.Net.Creates.Load(); n < 2 {
		t.Fatalf("%d starts in %d bursts around the idle deadline: the race was never exercised", n, bursts)
	}
	t.Logf("%d requests, %d starts (env reaped and restarted %d times)", bursts*width, g.Net.Creates.Load(), g.Net.Creates.Load()-1)
}

// With max_envs reached and every env busy, a new env is refused at once
// with 503 and Retry-After; once one is idle, the new env evicts it.
func TestAtCapacityAnswers503WithRetryAfter(t *testing.T) {
	g := startGateway(t, gwOptions{Limits: lifecycle.Limits{MaxEnvs: 5}})
	slowCtx, stopSlow := context.WithCancel(context.Background())
	defer stopSlow()
	var slow sync.WaitGroup
	defer slow.Wait()
	for i := range 5 {
		host := fmt.Sprintf("busy%d.localhost", i)
		slow.Go(func() {
			req, _ := http.NewRequestWithContext(slowCtx, "GET", "http://"+host+"/slow?ms=60000", nil)
			if resp, err := g.Client.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	for i := range 5 {
		name := fmt.Sprintf("busy%d", i)
		wait.For(t, 30*time.Second, "env "+name+" ready with a slow request in flight", func() bool {
			in := envState(g, name)
			return in.State == lifecycle.Ready && in.InFlight > 0
		})
	}
	resp := g.get(t, "sixth.localhost", "/", "Accept", "application/json")
	var body struct {
		Error      string `json:"error"`
		RetryAfter int    `json:"retry_after"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || body.Error != "at_capacity" {
		t.Fatalf("sixth env: status %d, Retry-After %q, error %q; want 503, a Retry-After, at_capacity",
			resp.StatusCode, resp.Header.Get("Retry-After"), body.Error)
	}
	if n := g.Net.Creates.Load(); n != 5 {
		t.Fatalf("%d sandboxes created, want 5: the refused env must not start", n)
	}

	stopSlow()
	slow.Wait()
	// The client is gone; the gateway notices and releases each lease.
	for i := range 5 {
		name := fmt.Sprintf("busy%d", i)
		wait.For(t, 30*time.Second, "env "+name+" without requests in flight", func() bool { return envState(g, name).InFlight == 0 })
	}
	resp = g.get(t, "sixth.localhost", "/")
	if resp.StatusCode != 200 {
		t.Fatalf("sixth env once the others are idle: status %d, want 200", resp.StatusCode)
	}
	evicted := 0
	for i := range 5 {
		if s := envState(g, fmt.Sprintf("busy%d", i)).State; s == lifecycle.Stopping || s == lifecycle.Stopped {
			evicted++
		}
	}
	if evicted != 1 {
		t.Fatalf("%d envs evicted for the sixth, want exactly 1", evicted)
	}
}
