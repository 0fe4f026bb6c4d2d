package devserver

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// TestProbeOnOutput checks that a line of output prompts a probe: with
// ticks an hour apart, only the line can find the server ready.
func TestProbeOnOutput(t *testing.T) {
	for name, pace := range map[string]probePace{
		// The line may prompt a probe only by the output bound.
		"bounded": {first: time.Hour, tightFor: time.Hour, max: time.Hour, output: time.Nanosecond},
		// Only as one of the first lines, which prompt a probe at once.
		"free": {first: time.Hour, tightFor: time.Hour, max: time.Hour, output: time.Hour, freeOutput: 1},
	} {
		t.Run(name, func(t *testing.T) { probeOnOutput(t, pace) })
	}
}

// probeOnOutput checks that, with ticks an hour apart, a line of output
// makes slow find a server that got ready after the first probe failed.
func probeOnOutput(t *testing.T, slow probePace) {
	var ready atomic.Bool
	failed := make(chan struct{}, 1) // a probe was answered "not ready"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ready.Load() {
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		select {
		case failed <- struct{}{}:
		default:
		}
	}))
	defer srv.Close()
	addr := netip.MustParseAddrPort(srv.Listener.Addr().String())

	lines := make(chan struct{}, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- slow.probe(ctx, addr, "/", nil, lines, nil) }()

	select {
	case <-failed:
	case err := <-done:
		t.Fatalf("probe ended before the server was ready: %v", err)
	}
	ready.Store(true)
	lines <- struct{}{} // "listening on ..."
	if err := <-done; err != nil {
		t.Fatalf("probe: %v; want it to find the server after its line of output", err)
	}
}

// TestProbePace checks the default pace: tight while a dev server may be
// about to answer, then few probes for a slow one (each refused probe
// costs the gateway a socket, a SYN, a reset and a goroutine), and a
// server that gets ready is seen soon after, relative to its boot time.
func TestProbePace(t *testing.T) {
	// seen is when the probes find a server that is ready at ready, and
	// how many probes that took (the first is at 0).
	seen := func(ready time.Duration) (at time.Duration, probes int) {
		gap := defaultPace.first
		for probes = 1; at < ready; probes++ {
			at += gap
			gap = defaultPace.nextGap(gap, at)
		}
		return at, probes
	}
	for _, tc := range []struct {
		ready     time.Duration
		maxProbes int
		maxLate   time.Duration
	}{
		{ready: 3 * time.Millisecond, maxProbes: 4, maxLate: time.Millisecond},
		{ready: 5 * time.Millisecond, maxProbes: 6, maxLate: time.Millisecond},
		{ready: 20 * time.Millisecond, maxProbes: 12, maxLate: 10 * time.Millisecond},
		{ready: 40 * time.Millisecond, maxProbes: 14, maxLate: 20 * time.Millisecond},
		{ready: 100 * time.Millisecond, maxProbes: 17, maxLate: probeMaxGap},
		{ready: 30 * time.Second, maxProbes: 17 + 30*1000/50, maxLate: probeMaxGap},
	} {
		at, n := seen(tc.ready)
		if n > tc.maxProbes || at-tc.ready > tc.maxLate {
			t.Errorf("ready at %v: seen at %v after %d probes; want at most %d probes and %v late", tc.ready, at, n, tc.maxProbes, tc.maxLate)
		}
	}
}

// TestProbeSkipsWhileSilent checks that no probe connects while silent
// says nothing listens, and that the first one after it does finds the
// server.
func TestProbeSkipsWhileSilent(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) }))
	defer srv.Close()
	addr := netip.MustParseAddrPort(srv.Listener.Addr().String())
	var asked atomic.Int32
	silent := func() bool { return asked.Add(1) <= 5 }
	pace := probePace{first: time.Millisecond, tightFor: time.Hour, max: time.Millisecond, output: time.Hour}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := pace.probe(ctx, addr, "/", nil, nil, silent); err != nil {
		t.Fatal(err)
	}
	if a, r := asked.Load(), requests.Load(); a != 6 || r != 1 {
		t.Errorf("silent asked %d times, server probed %d times; want 6 and 1", a, r)
	}
}
