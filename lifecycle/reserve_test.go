package lifecycle_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/rs/zerolog"
)

// eventLog keeps the manager's log events (zerolog writes one per Write).
type eventLog struct {
	mu     sync.Mutex
	events []map[string]any
}

func (l *eventLog) Write(p []byte) (int, error) {
	var ev map[string]any
	if err := json.Unmarshal(p, &ev); err == nil {
		l.mu.Lock()
		l.events = append(l.events, ev)
		l.mu.Unlock()
	}
	return len(p), nil
}

// evictions lists "env (reason)" for every eviction logged so far.
func (l *eventLog) evictions() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, ev := range l.events {
		reason, _ := ev["reason"].(string)
		if ev["message"] == "env stopped" && strings.HasPrefix(reason, "evicted") {
			out = append(out, fmt.Sprintf("%v (%s)", ev["env"], reason))
		}
	}
	return out
}

// newLoggedFixture is newFixture with the manager's events also kept in
// log.
func newLoggedFixture(t *testing.T, cfg lifecycle.Config, log *eventLog) *fixture {
	t.Helper()
	cfg.Log = zerolog.New(io.MultiWriter(zerolog.NewTestWriter(t), log)).Level(zerolog.InfoLevel)
	f := lifecycletest.NewFixture(t, cfg, devserver.Config{})
	return f
}

// acquireAll acquires names at once and returns their leases, failing
// the test on any error.
func acquireAll(t *testing.T, m *lifecycle.Manager, names []string) []*lifecycle.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leases := make([]*lifecycle.Lease, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() { leases[i], errs[i] = m.Acquire(ctx, n) })
	}
	wg.Wait()
	for i, l := range leases {
		if l != nil {
			t.Cleanup(l.Release)
		}
		if errs[i] != nil {
			t.Errorf("acquire %s: %v", names[i], errs[i])
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return leases
}

// Issue 10, test 2: at max_envs with every env idle, as many concurrent
// starts as envs all succeed, each evicting exactly one env (the slot an
// eviction frees goes to the start that made it). Three rounds, each
// evicting the previous round's envs.
func TestConcurrentStartsAtMaxEnvsEachEvictOne(t *testing.T) {
	log := &eventLog{}
	f := newLoggedFixture(t, lifecycle.Config{
		Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{})},
		Limits:    lifecycle.Limits{MaxEnvs: 3},
	}, log)
	prev := []string{"e1", "e2", "e3"}
	for _, l := range acquireAll(t, f.M, prev) {
		l.Release()
	}
	for round := range 3 {
		next := []string{fmt.Sprintf("r%d-a", round), fmt.Sprintf("r%d-b", round), fmt.Sprintf("r%d-c", round)}
		for _, l := range acquireAll(t, f.M, next) {
			if p := getPage(t, l); p.Env != l.Env() {
				t.Fatalf("lease for %s reached env %q", l.Env(), p.Env)
			}
			l.Release()
		}
		for _, n := range prev {
			waitState(t, f.M, n, lifecycle.Stopped, 20*time.Second)
		}
		if ev := log.evictions(); len(ev) != 3*(round+1) {
			t.Fatalf("round %d: evictions %q, want %d", round, ev, 3*(round+1))
		}
		for _, n := range next {
			if s := stateOf(f.M, n); s != lifecycle.Ready {
				t.Fatalf("round %d: %s is %v, want ready", round, n, s)
			}
		}
		prev = next
	}
	if c := f.Net.Creates.Load(); c != 12 {
		t.Fatalf("creates = %d, want 12 (one per env)", c)
	}
}

// A start at max_envs that finds nothing idle, but an env on its way
// out, waits for that env's slot instead of being refused.
func TestStartAtMaxEnvsWaitsForEnvBeingStopped(t *testing.T) {
	// The shell outlives SIGTERM: a stop takes the whole grace (2s).
	slow := lifecycletest.Shell(`trap '' TERM; "$DEMO" & while :; do sleep 0.05; done`, 20*time.Second)
	f := newFixture(t, lifecycle.Config{
		Templates: []*lifecycle.Template{slow},
		Limits:    lifecycle.Limits{MaxEnvs: 2},
	})
	acquire(t, f.M, "leaving").Release()
	busy := acquire(t, f.M, "busy")
	t.Cleanup(busy.Release)
	stopped := make(chan bool, 1)
	go func() { stopped <- f.M.Stop("leaving", "test") }()
	t.Cleanup(func() { <-stopped })
	waitState(t, f.M, "leaving", lifecycle.Stopping, 20*time.Second)

	began := time.Now()
	l := acquire(t, f.M, "newcomer")
	t.Cleanup(l.Release)
	t.Logf("newcomer started %v after the stop began", time.Since(began))
	if s := stateOf(f.M, "busy"); s != lifecycle.Ready {
		t.Fatalf("busy env is %v, want ready", s)
	}
	if s := stateOf(f.M, "leaving"); s == lifecycle.Ready || s == lifecycle.Starting {
		t.Fatalf("stopped env is %v", s)
	}
}
