package loadtest

import (
	"bytes"
	"context"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/envgate/envgate/netns/netnstest/wait"
)

func mustRun(t *testing.T, o Options) *Report {
	t.Helper()
	rep, err := Run(t.Context(), o, nil)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if t.Failed() || testing.Verbose() {
		var b bytes.Buffer
		rep.WriteTable(&b)
		t.Logf("report:\n%s", b.String())
	}
	return rep
}

// memOptions runs o against h in memory (memTransport): for a run in a
// testing/synctest bubble, where a stall in h is exactly as long as it
// says on the bubble's clock, however loaded the machine.
func memOptions(o Options, h http.Handler) Options {
	o.Addr = "in-memory:0" // never dialed
	o.transport = memTransport{h}
	return o
}

func totalErrors(r *Report) int64 {
	var n int64
	for _, v := range r.Errors {
		n += v
	}
	return n
}

// TestOpenLoopHoldsRate checks the schedule: against a fast server the
// generator lays out and sends the requested rate within 5%, and every
// request comes back.
func TestOpenLoopHoldsRate(t *testing.T) {
	s := startEnvServer(t, serverConfig{})
	rep := mustRun(t, Options{Addr: s.addr(), Rate: 1000, Duration: 2 * time.Second, Envs: 20})

	if rep.Scheduled != 2000 {
		t.Errorf("scheduled %d requests, want 2000 (1000/s for 2s)", rep.Scheduled)
	}
	if got := rep.SendRateRPS; got < 950 || got > 1050 {
		t.Errorf("send rate %.1f/s, want 1000/s within 5%%", got)
	}
	if rep.Requests != 2000 || rep.OK != 2000 || totalErrors(rep) != 0 {
		t.Errorf("requests %d ok %d errors %v, want 2000 ok and no errors", rep.Requests, rep.OK, rep.Errors)
	}
	if _, served, _ := s.counts(); served != 2000 {
		t.Errorf("server saw %d requests, want 2000", served)
	}
	if rep.Latency.Overall.Count != 2000 {
		t.Errorf("latency samples %d, want 2000", rep.Latency.Overall.Count)
	}
}

// stallBefore stalls every request that arrives in [from, from+window) of
// the run for d: in a synctest bubble, d of the bubble's clock.
func stallBefore(from, window, d time.Duration) func(*http.Request) {
	start := time.Now()
	return func(*http.Request) {
		if since := time.Since(start); since >= from && since < from+window {
			time.Sleep(d)
		}
	}
}

// TestOpenLoopSeesStall: a 200 ms stall during a 300 ms window of a 2 s run
// at 200 req/s must reach the p99, while the median stays fast.
func TestOpenLoopSeesStall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newEnvServer(serverConfig{before: stallBefore(800*time.Millisecond, 300*time.Millisecond, 200*time.Millisecond)})
		rep := mustRun(t, memOptions(Options{Rate: 200, Duration: 2 * time.Second, Envs: 5}, s))

		if p99 := rep.Latency.Overall.P99; p99 < 150 {
			t.Errorf("p99 = %.1f ms, want >= 150 ms: the stall is hidden", p99)
		}
		if p50 := rep.Latency.Overall.P50; p50 >= 150 {
			t.Errorf("p50 = %.1f ms, want < 150 ms: only the stall window is slow", p50)
		}
		if totalErrors(rep) != 0 {
			t.Errorf("errors %v, want none", rep.Errors)
		}
	})
}

// TestOpenLoopNoCoordinatedOmission is the sharper form: with a single
// request allowed in flight, one request that the server holds for 200 ms
// delays the ~40 requests scheduled behind it. The server saw only one slow
// request, but their latency counts from their scheduled time, so the p99
// shows the stall; a closed-loop measurement would have recorded one slow
// sample out of 400.
func TestOpenLoopNoCoordinatedOmission(t *testing.T) {
	synctest.Test(t, testNoCoordinatedOmission)
}

func testNoCoordinatedOmission(t *testing.T) {
	start := time.Now()
	var stalled atomic.Bool
	s := newEnvServer(serverConfig{before: func(*http.Request) {
		if time.Since(start) >= time.Second && !stalled.Swap(true) {
			time.Sleep(200 * time.Millisecond)
		}
	}})
	rep := mustRun(t, memOptions(Options{Rate: 200, Duration: 2 * time.Second, Envs: 1, MaxInflight: 1}, s))

	if !stalled.Load() {
		t.Fatal("the server never stalled")
	}
	if p99 := rep.Latency.Overall.P99; p99 < 150 {
		t.Errorf("p99 = %.1f ms, want >= 150 ms: latency is not measured from the schedule", p99)
	}
	if rep.StartLag.Max < 150 {
		t.Errorf("max start lag %.1f ms, want >= 150 ms: requests queued behind the stall", rep.StartLag.Max)
	}
	if rep.GeneratorBottleneck {
		t.Errorf("blamed the generator for a server stall: %s", rep.GeneratorNote)
	}
	if !strings.Contains(rep.GeneratorNote, "server did not keep up") {
		t.Errorf("note %q, want it to say the server did not keep up", rep.GeneratorNote)
	}
	if rep.Errors["backlog"] != 0 {
		t.Errorf("backlog %d, want 0: the queue holds a second of traffic", rep.Errors["backlog"])
	}
}

// TestMisrouteCaught: every response naming another env is counted as a
// misroute, exactly.
func TestMisrouteCaught(t *testing.T) {
	wrong := func(host string) bool { return strings.HasPrefix(host, "e3.") || strings.HasPrefix(host, "e7.") }
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"header", Options{}},
		{"body", Options{ExpectBody: "hello from {{.Env}}\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startEnvServer(t, serverConfig{wrongEnv: wrong})
			o := tc.o
			o.Addr, o.Concurrency, o.Requests, o.Envs = s.addr(), 4, 300, 10
			rep := mustRun(t, o)
			_, served, misrouted := s.counts()
			if misrouted == 0 {
				t.Fatal("the test server misrouted nothing: the test proves nothing")
			}
			if got := rep.Errors["misroute"]; got != int64(misrouted) {
				t.Errorf("misroute errors %d, server misrouted %d", got, misrouted)
			}
			if rep.Requests != 300 || served != 300 || rep.OK != int64(300-misrouted) {
				t.Errorf("requests %d ok %d served %d, want 300, %d, 300", rep.Requests, rep.OK, served, 300-misrouted)
			}
		})
	}
	t.Run("no-check", func(t *testing.T) {
		s := startEnvServer(t, serverConfig{wrongEnv: wrong})
		rep := mustRun(t, Options{Addr: s.addr(), Concurrency: 2, Requests: 100, Envs: 10, NoCheck: true})
		if _, _, misrouted := s.counts(); misrouted == 0 || rep.Errors["misroute"] != 0 || rep.OK != 100 {
			t.Errorf("server misrouted %d, report misroutes %d ok %d: want all ok with --no-check", misrouted, rep.Errors["misroute"], rep.OK)
		}
	})
}

// TestColdWarm: a request is cold when it is the generator's first to its
// host or when the response carries the cold-start header.
func TestColdWarm(t *testing.T) {
	never := func(string, bool) bool { return false }
	t.Run("first request per host", func(t *testing.T) {
		for _, dist := range []string{"uniform", "hotcold:3,0.2"} {
			s := startEnvServer(t, serverConfig{cold: never})
			rep := mustRun(t, Options{Addr: s.addr(), Concurrency: 3, Requests: 200, Envs: 8, Dist: dist})
			hosts, served, _ := s.counts()
			if rep.Latency.Cold.Count != int64(hosts) || rep.Latency.Warm.Count != int64(served-hosts) {
				t.Errorf("%s: cold %d warm %d, want %d and %d (hosts the server saw, the rest)",
					dist, rep.Latency.Cold.Count, rep.Latency.Warm.Count, hosts, served-hosts)
			}
			if dist != "uniform" && hosts <= 3 {
				t.Errorf("hotcold reached %d hosts, want never-seen hosts beyond the 3 hot ones", hosts)
			}
		}
	})
	t.Run("cold-start header", func(t *testing.T) {
		const coldHost = "e0.localhost"
		s := startEnvServer(t, serverConfig{cold: func(host string, _ bool) bool { return host == coldHost }})
		rep := mustRun(t, Options{Addr: s.addr(), Concurrency: 3, Requests: 200, Envs: 4})
		hosts, _, _ := s.counts()
		// Every request to e0 carries the header; the others are cold once.
		want := int64(s.requestsTo(coldHost) + hosts - 1)
		if s.requestsTo(coldHost) < 2 || rep.Latency.Cold.Count != want {
			t.Errorf("cold %d, want %d (%d requests to %s, %d other hosts)",
				rep.Latency.Cold.Count, want, s.requestsTo(coldHost), coldHost, hosts-1)
		}
	})
}

// TestWarmupExcluded: requests during the warm-up are sent but not reported,
// and hosts first hit during it are warm afterwards.
func TestWarmupExcluded(t *testing.T) {
	s := startEnvServer(t, serverConfig{})
	rep := mustRun(t, Options{Addr: s.addr(), Rate: 200, Warmup: 500 * time.Millisecond, Requests: 100, Envs: 2})
	_, served, _ := s.counts()
	if rep.Requests != 100 || served != 200 {
		t.Errorf("reported %d of %d served, want 100 of 200 (100 in the warm-up)", rep.Requests, served)
	}
	if rep.Latency.Cold.Count != 0 {
		t.Errorf("cold %d after warm-up, want 0: both hosts were hit during it", rep.Latency.Cold.Count)
	}
}

// TestErrorClasses: connection refused, status and timeout each land in
// their class.
func TestErrorClasses(t *testing.T) {
	t.Run("connect", func(t *testing.T) {
		s := startEnvServer(t, serverConfig{})
		addr := s.addr()
		s.srv.Close()
		rep := mustRun(t, Options{Addr: addr, Concurrency: 2, Requests: 10})
		if rep.Errors["connect"] != 10 || rep.Latency.Overall.Count != 0 {
			t.Errorf("errors %v, latency samples %d: want 10 connect errors, no samples", rep.Errors, rep.Latency.Overall.Count)
		}
	})
	t.Run("status", func(t *testing.T) {
		s := startEnvServer(t, serverConfig{})
		rep := mustRun(t, Options{Addr: s.addr(), Concurrency: 2, Requests: 10, Path: "/x", Method: http.MethodPost, Body: []byte("{}")})
		if rep.OK != 10 {
			t.Fatalf("ok %d, want 10 before checking statuses", rep.OK)
		}
		s404 := startHandler(t, http.NotFoundHandler())
		rep = mustRun(t, Options{Addr: s404, Concurrency: 2, Requests: 10})
		if rep.Errors["status"] != 10 || rep.Status[404] != 10 {
			t.Errorf("errors %v status %v: want 10 status errors, all 404", rep.Errors, rep.Status)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		addr := startHandler(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
		t.Cleanup(func() { close(release) })
		rep := mustRun(t, Options{Addr: addr, Concurrency: 2, Requests: 4, Timeout: 100 * time.Millisecond})
		if rep.Errors["timeout"] != 4 || rep.Latency.Overall.Count != 4 || rep.Latency.Overall.P50 < 100 {
			t.Errorf("errors %v latency %+v: want 4 timeouts recorded at >= 100 ms", rep.Errors, rep.Latency.Overall)
		}
	})
}

// TestBacklogBounded: against a server too slow for the rate, the open loop
// keeps at most --max-inflight requests in flight, gives up the requests that
// waited longer than the timeout to be sent (backlog) while keeping their
// latency, and says the server was the limit.
func TestBacklogBounded(t *testing.T) {
	synctest.Test(t, testBacklogBounded)
}

func testBacklogBounded(t *testing.T) {
	var (
		mu      sync.Mutex
		cur, hi int
	)
	// The handler leaves the count before it answers, so the count is the
	// generator's in-flight requests exactly.
	slow := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		mu.Lock()
		cur++
		hi = max(hi, cur)
		mu.Unlock()
		time.Sleep(300 * time.Millisecond)
		mu.Lock()
		cur--
		mu.Unlock()
	})
	// 4 workers serve about 13 requests a second of the 100 scheduled; the
	// rest wait longer than the 500 ms timeout and are given up.
	rep := mustRun(t, memOptions(Options{Rate: 100, Duration: time.Second, MaxInflight: 4, Timeout: 500 * time.Millisecond, NoCheck: true}, slow))
	mu.Lock()
	defer mu.Unlock()
	if hi != 4 {
		t.Errorf("server saw up to %d requests at once, want 4 (--max-inflight)", hi)
	}
	if rep.Errors["backlog"] == 0 || rep.OK == 0 || rep.Errors["backlog"]+rep.Requests != rep.Scheduled {
		t.Errorf("scheduled %d, ok %d, errors %v: want some sent, the rest backlog", rep.Scheduled, rep.OK, rep.Errors)
	}
	if rep.Latency.Overall.Count != rep.Scheduled || rep.Latency.Overall.P50 < 300 {
		t.Errorf("latency %+v of %d scheduled: want every request at >= 300 ms (served, or waited longer)", rep.Latency.Overall, rep.Scheduled)
	}
	if rep.GeneratorBottleneck || !strings.Contains(rep.GeneratorNote, "backlog") {
		t.Errorf("bottleneck %v note %q: want the server blamed, with the backlog", rep.GeneratorBottleneck, rep.GeneratorNote)
	}
}

// TestInterrupted: cancelling the context ends the run early with a report.
func TestInterrupted(t *testing.T) {
	s := startEnvServer(t, serverConfig{})
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(300*time.Millisecond, cancel)
	started := time.Now()
	rep, err := Run(ctx, Options{Addr: s.addr(), Rate: 100, Duration: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Interrupted || time.Since(started) > 30*time.Second {
		t.Errorf("interrupted %v after %s, want an early, interrupted report", rep.Interrupted, time.Since(started))
	}
	if rep.Requests == 0 || rep.Scheduled >= 6000 {
		t.Errorf("requests %d scheduled %d, want part of the minute", rep.Requests, rep.Scheduled)
	}
}

// TestProgress: the live line is written with \r and ends with a newline.
func TestProgress(t *testing.T) {
	s := startEnvServer(t, serverConfig{})
	var out syncBuffer
	if _, err := Run(t.Context(), Options{Addr: s.addr(), Concurrency: 1, Requests: 20}, &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if !strings.HasPrefix(got, "\r") || !strings.HasSuffix(got, "\n") || !strings.Contains(got, "requests 20") {
		t.Errorf("progress %q, want a \\r line with the request count and a final newline", got)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestNoGoroutineLeak: every goroutine a run starts (scheduler, workers,
// progress, connections) is gone once the server side has noticed the
// closed connections.
func TestNoGoroutineLeak(t *testing.T) {
	s := startEnvServer(t, serverConfig{})
	before := runtime.NumGoroutine()
	var progress syncBuffer
	for _, o := range []Options{
		{Addr: s.addr(), Rate: 500, Requests: 200, Envs: 20},
		{Addr: s.addr(), Concurrency: 8, Requests: 200, Envs: 20, ExpectBody: "from {{.Env}}"},
	} {
		if _, err := Run(t.Context(), o, &progress); err != nil {
			t.Fatal(err)
		}
	}
	// The transport's connection goroutines end a moment after Run
	// closed them.
	wait.Until(10*time.Second, func() bool { return runtime.NumGoroutine() <= before })
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after the runs, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}
