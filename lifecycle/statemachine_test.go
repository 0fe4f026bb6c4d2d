package lifecycle_test

// Tests of the env state machine over lifecycletest's fake network and
// launcher: no root, no kernel, no real time. Each runs in a
// testing/synctest bubble, so boots, grace periods, idle deadlines and
// backoffs happen at exact instants of the bubble's clock, and
// synctest.Wait lets every goroutine of the manager settle before the
// test looks.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/rs/zerolog"
)

// advance moves the bubble's clock on by d and lets everything due by
// then run until it blocks.
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

type acquired struct {
	l   *lifecycle.Lease
	err error
}

// goAcquire runs Acquire on a goroutine of its own; the result arrives on
// the channel.
func goAcquire(m *lifecycle.Manager, name string) <-chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		l, err := m.Acquire(context.Background(), name)
		ch <- acquired{l, err}
	}()
	return ch
}

// pending fails t if ch has a result already.
func pending(t *testing.T, ch <-chan acquired, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s: Acquire returned already (%v, %v)", what, r.l, r.err)
	default:
	}
}

// must fails t if r is an error, and returns its lease, released when the
// test ends.
func must(t *testing.T, r acquired) *lifecycle.Lease {
	t.Helper()
	if r.err != nil {
		t.Fatalf("acquire: %v", r.err)
	}
	t.Cleanup(r.l.Release)
	return r.l
}

// startError returns err as a *StartError or fails t.
func startError(t *testing.T, err error) *lifecycle.StartError {
	t.Helper()
	var se *lifecycle.StartError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want a *StartError", err)
	}
	return se
}

// observed keeps what a Manager tells its Observer, in order.
type observed struct {
	mu                       sync.Mutex
	started, failed, refused []string
	stopped                  []string // "env cause"
}

func (o *observed) add(to *[]string, s string) {
	o.mu.Lock()
	*to = append(*to, s)
	o.mu.Unlock()
}

func (o *observed) Started(env string, _ lifecycle.StartPhases) { o.add(&o.started, env) }
func (o *observed) StartFailed(env string, timeout bool) {
	o.add(&o.failed, fmt.Sprintf("%s timeout=%v", env, timeout))
}
func (o *observed) Refused(env, limit string) { o.add(&o.refused, env+" "+limit) }
func (o *observed) Stopped(env, cause string) { o.add(&o.stopped, env+" "+cause) }

func (o *observed) get(from *[]string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(*from)
}

// behave returns a Launcher.Behave giving every dev server b.
func behave(b lifecycletest.FakeBehaviour) func(string, int) lifecycletest.FakeBehaviour {
	return func(string, int) lifecycletest.FakeBehaviour { return b }
}

// Concurrent Acquires of a cold env share one start, and each is told it
// waited exactly the dev server's boot.
func TestFakeConcurrentAcquiresShareOneStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := lifecycletest.NewFake()
		fake.Launcher.Behave = behave(lifecycletest.FakeBehaviour{Boot: 3 * time.Second})
		m := lifecycletest.NewFakeManager(t, lifecycle.Config{}, fake)
		var chs []<-chan acquired
		for range 5 {
			chs = append(chs, goAcquire(m, "a"))
		}
		advance(3*time.Second - time.Nanosecond)
		if s := stateOf(m, "a"); s != lifecycle.Starting {
			t.Fatalf("during the boot a is %v, want starting", s)
		}
		for _, ch := range chs {
			pending(t, ch, "during the boot")
		}
		advance(time.Nanosecond)
		for _, ch := range chs {
			l := must(t, <-ch)
			if l.Cold != 3*time.Second || l.Addr != netip.MustParseAddrPort("10.200.0.1:3000") {
				t.Errorf("lease: cold %v at %v, want 3s at 10.200.0.1:3000", l.Cold, l.Addr)
			}
		}
		if n := fake.Launcher.Launches(""); n != 1 {
			t.Fatalf("%d launches, want 1", n)
		}
		if ev := fake.Events(); !slices.Equal(ev, []string{"create a", "launch a#1", "ready a#1"}) {
			t.Fatalf("events %q", ev)
		}
	})
}

// The start/stop race, one way: an Acquire that comes while the env is
// being stopped waits for the stop to finish (the dev server ignores
// SIGTERM: the whole grace, then SIGKILL), then starts the env afresh in
// a new sandbox, and is not answered from the old one.
func TestFakeAcquireDuringStopWaitsThenStartsAfresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := lifecycletest.NewFake()
		fake.Launcher.Behave = func(_ string, n int) lifecycletest.FakeBehaviour {
			return lifecycletest.FakeBehaviour{IgnoreTerm: n == 1}
		}
		m := lifecycletest.NewFakeManager(t, lifecycle.Config{}, fake)
		first := must(t, <-goAcquire(m, "a"))
		first.Release()
		stopped := make(chan bool, 1)
		go func() { stopped <- m.Stop("a", "test") }()
		synctest.Wait()
		if s := stateOf(m, "a"); s != lifecycle.Stopping {
			t.Fatalf("a is %v, want stopping", s)
		}
		ch := goAcquire(m, "a")
		advance(5*time.Second - time.Nanosecond) // the template's StopGrace
		pending(t, ch, "during the stop")
		if n := fake.Launcher.Launches("a"); n != 1 {
			t.Fatalf("%d launches during the stop, want 1", n)
		}
		advance(time.Nanosecond)
		if !<-stopped {
			t.Fatal("Stop reported nothing to stop")
		}
		l := must(t, <-ch)
		if l.Cold != 5*time.Second || l.Addr == first.Addr {
			t.Errorf("lease after the stop: cold %v at %v, want 5s at a new address (the old was %v)", l.Cold, l.Addr, first.Addr)
		}
		want := []string{"create a", "launch a#1", "ready a#1", "term a#1", "kill a#1", "exit a#1", "destroy a", "release a#1",
			"create a", "launch a#2", "ready a#2"}
		if ev := fake.Events(); !slices.Equal(ev, want) {
			t.Fatalf("events\n%q\nwant\n%q", ev, want)
		}
	})
}

// The start/stop race, the other way: closing the manager during a start
// aborts it at once (not at the start timeout): the waiting Acquire gets
// the abort, the dev server is stopped and its sandbox destroyed.
func TestFakeCloseAbortsStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := lifecycletest.NewFake()
		fake.Launcher.Behave = behave(lifecycletest.FakeBehaviour{Hang: true})
		m := lifecycletest.NewFakeManager(t, lifecycle.Config{}, fake)
		ch := goAcquire(m, "a")
		advance(time.Second)
		if s := stateOf(m, "a"); s != lifecycle.Starting {
			t.Fatalf("a is %v, want starting", s)
		}
		began := time.Now()
		if err := m.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(began); d != 0 {
			t.Errorf("Close took %v, want no wait", d)
		}
		se := startError(t, (<-ch).err)
		if se.Reason != "gateway shutting down" {
			t.Errorf("reason %q", se.Reason)
		}
		if _, err := m.Acquire(context.Background(), "b"); !errors.Is(err, lifecycle.ErrClosed) {
			t.Errorf("acquire after close: %v, want ErrClosed", err)
		}
		want := []string{"create a", "launch a#1", "term a#1", "exit a#1", "destroy a", "release a#1"}
		if ev := fake.Events(); !slices.Equal(ev, want) {
			t.Fatalf("events %q, want %q", ev, want)
		}
	})
}

// A dev server that never answers fails its start at exactly the start
// timeout (504: Timeout), and is stopped.
func TestFakeStartTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := lifecycletest.NewFake()
		fake.Launcher.Behave = behave(lifecycletest.FakeBehaviour{Hang: true})
		obs := &observed{}
		m := lifecycletest.NewFakeManager(t, lifecycle.Config{Observer: obs}, fake)
		ch := goAcquire(m, "a")
		advance(20*time.Second - time.Nanosecond)
		pending(t, ch, "before the start timeout")
		advance(time.Nanosecond)
		se := startError(t, (<-ch).err)
		if !se.Timeout || se.Reason != "not ready within 20s (is it listening on port 3000?)" {
			t.Errorf("StartError %+v, want a timeout", se)
		}
		if !slices.Contains(se.Tail, "a#1 booting") {
			t.Errorf("tail %q lacks the server's output", se.Tail)
		}
		if s := stateOf(m, "a"); s != lifecycle.Failed {
			t.Errorf("a is %v, want failed (%+v, events %q)", s, m.List(), fake.Events())
		}
		if fake.Net.Live() != 0 || fake.Launcher.Running() != 0 {
			t.Errorf("%d sandboxes and %d dev servers left", fake.Net.Live(), fake.Launcher.Running())
		}
		if f := obs.get(&obs.failed); !slices.Equal(f, []string{"a timeout=true"}) {
			t.Errorf("observed failures %q", f)
		}
	})
}

// An idle env is stopped at the first reap tick after its idle timeout
// has passed (strictly) since its last lease ended, at the lowest CPU
// priority; one with a lease held is not, however long it is held, and
// goes the same idle timeout after its release.
func TestFakeIdleDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := lifecycletest.NewFake()
		obs := &observed{}
		m := lifecycletest.NewFakeManager(t, lifecycle.Config{Observer: obs, ReapInterval: time.Second}, fake)
		a := must(t, <-goAcquire(m, "a"))
		b := must(t, <-goAcquire(m, "b"))
		advance(10 * time.Second)
		a.Release()
		advance(30 * time.Second) // a idle for exactly its idle timeout: not past it
		if s := stateOf(m, "a"); s != lifecycle.Ready {
			t.Fatalf("a, idle for exactly its idle timeout, is %v, want ready", s)
		}
		advance(time.Second) // the next reap tick
		if s := stateOf(m, "a"); s != lifecycle.Stopped {
			t.Fatalf("a, idle past its idle timeout, is %v, want stopped", s)
		}
		if p := fake.Launcher.Process("a", 1); !p.Deprioritized() {
			t.Error("idle reap did not deprioritize the dev server")
		}
		advance(time.Minute)
		if s := stateOf(m, "b"); s != lifecycle.Ready {
			t.Fatalf("b, leased for 101s, is %v, want ready", s)
		}
		b.Release()
		advance(30 * time.Second)
		if s := stateOf(m, "b"); s != lifecycle.Ready {
			t.Fatalf("b, idle for exactly its idle timeout, is %v, want ready", s)
		}
		advance(time.Second)
		if s := stateOf(m, "b"); s != lifecycle.Stopped {
			t.Fatalf("b is %v, want stopped", s)
		}
		if st := obs.get(&obs.stopped); !slices.Equal(st, []string{"a idle", "b idle"}) {
			t.Fatalf("observed stops %q", st)
		}
	})
}

// Consecutive failed starts back off: the first may be retried at once,
// the n-th waits 1s, 2s, 4s ... up to a minute, exactly; a request during
// the backoff gets the failure at once and launches nothing. A start
// that succeeds and a stop on purpose end the series.
func TestFakeBackoffAfterFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := lifecycletest.NewFake()
		var mu sync.Mutex
		failing := true
		fake.Launcher.Behave = func(string, int) lifecycletest.FakeBehaviour {
			mu.Lock()
			defer mu.Unlock()
			if failing {
				return lifecycletest.FakeBehaviour{ExitAtBoot: "exit status 1"}
			}
			return lifecycletest.FakeBehaviour{}
		}
		// No reap tick within the test: one at the very instant a 60s
		// backoff ends (30s past the idle timeout) would forget the env,
		// and the count of its failures, as the request comes. See
		// TestFakeBackoffSurvivesTheReaper for the reaper.
		m := lifecycletest.NewFakeManager(t, lifecycle.Config{ReapInterval: time.Hour}, fake)
		want := []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second,
			32 * time.Second, time.Minute, time.Minute}
		for i, wait := range want {
			se := startError(t, (<-goAcquire(m, "a")).err)
			if se.Reason != "dev server exit status 1 before it was ready" {
				t.Fatalf("failure %d: reason %q", i+1, se.Reason)
			}
			if n := fake.Launcher.Launches("a"); n != i+1 {
				t.Fatalf("failure %d: %d launches", i+1, n)
			}
			if wait == 0 {
				if !se.RetryAt.IsZero() {
					t.Fatalf("failure %d: retry at %v, want at once", i+1, se.RetryAt)
				}
				continue
			}
			if got := time.Until(se.RetryAt); got != wait {
				t.Fatalf("failure %d: backoff %v, want %v", i+1, got, wait)
			}
			advance(wait - time.Nanosecond)
			again := startError(t, (<-goAcquire(m, "a")).err)
			if !again.RetryAt.Equal(se.RetryAt) || fake.Launcher.Launches("a") != i+1 {
				t.Fatalf("failure %d: during the backoff: %v, %d launches", i+1, again, fake.Launcher.Launches("a"))
			}
			advance(time.Nanosecond)
		}
		mu.Lock()
		failing = false
		mu.Unlock()
		must(t, <-goAcquire(m, "a")).Release()
		if !m.Stop("a", "test") {
			t.Fatal("nothing to stop")
		}
		mu.Lock()
		failing = true
		mu.Unlock()
		if se := startError(t, (<-goAcquire(m, "a")).err); !se.RetryAt.IsZero() {
			t.Fatalf("first failure after a stop on purpose: retry at %v, want at once", se.RetryAt)
		}
	})
}

// A dev server that crashes within crashLoopWindow (10s) of getting ready
// is crash-looping: each crash counts as one more consecutive failure and
// the backoff grows. One that ran longer crashes afresh: retried at once.
func TestFakeCrashLoopBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := lifecycletest.NewFake()
		fake.Launcher.Behave = func(_ string, n int) lifecycletest.FakeBehaviour {
			switch {
			case n <= 3:
				return lifecycletest.FakeBehaviour{CrashAfter: 5 * time.Second}
			case n == 4:
				return lifecycletest.FakeBehaviour{CrashAfter: 11 * time.Second}
			}
			return lifecycletest.FakeBehaviour{}
		}
		obs := &observed{}
		m := lifecycletest.NewFakeManager(t, lifecycle.Config{Observer: obs, ReapInterval: time.Hour}, fake)
		crash := func(n int, after, backoff time.Duration) {
			t.Helper()
			must(t, <-goAcquire(m, "a")).Release()
			if got := fake.Launcher.Launches("a"); got != n {
				t.Fatalf("run %d: %d launches", n, got)
			}
			advance(after - time.Nanosecond)
			if s := stateOf(m, "a"); s != lifecycle.Ready {
				t.Fatalf("run %d: before its crash a is %v, want ready", n, s)
			}
			advance(time.Nanosecond)
			if s := stateOf(m, "a"); s != lifecycle.Failed {
				t.Fatalf("run %d: after its crash a is %v, want failed", n, s)
			}
			if backoff == 0 {
				return // the next Acquire starts it at once
			}
			se := startError(t, (<-goAcquire(m, "a")).err)
			if se.Reason != "dev server exit status 2" || time.Until(se.RetryAt) != backoff {
				t.Fatalf("run %d: %q, retry in %v, want in %v", n, se.Reason, time.Until(se.RetryAt), backoff)
			}
			if got := fake.Launcher.Launches("a"); got != n {
				t.Fatalf("run %d: restarted during the backoff", n)
			}
			advance(backoff)
		}
		crash(1, 5*time.Second, 0)
		crash(2, 5*time.Second, time.Second)
		crash(3, 5*time.Second, 2*time.Second)
		crash(4, 11*time.Second, 0) // ran for longer than the window
		must(t, <-goAcquire(m, "a"))
		if got := fake.Launcher.Launches("a"); got != 5 {
			t.Fatalf("%d launches, want 5", got)
		}
		want := []string{"a crashed", "a crashed", "a crashed", "a crashed"}
		if st := obs.get(&obs.stopped); !slices.Equal(st, want) {
			t.Errorf("observed stops %q, want %q", st, want)
		}
	})
}

// startIdle starts names one after the other, a second apart, and
// releases them: their last activity is in that order.
func startIdle(t *testing.T, m *lifecycle.Manager, names ...string) {
	t.Helper()
	for _, n := range names {
		must(t, <-goAcquire(m, n)).Release()
		advance(time.Second)
	}
}

// At max_envs, each new start evicts the least recently used idle env:
// the order of evictions is the order of last activity, whatever the
// order of the starts was.
func TestFakeEvictionOrderIsLeastRecentlyUsed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := lifecycletest.NewFake()
		obs := &observed{}
		m := lifecycletest.NewFakeManager(t, lifecycle.Config{Observer: obs, ReapInterval: time.Hour,
			Limits: lifecycle.Limits{MaxEnvs: 3}}, fake)
		startIdle(t, m, "e1", "e2", "e3")
		startIdle(t, m, "e2", "e3", "e1") // used again, in this order
		startIdle(t, m, "n1", "n2", "n3")
		if terms := fake.EventsOf("term"); !slices.Equal(terms, []string{"e2#1", "e3#1", "e1#1"}) {
			t.Fatalf("evicted %q, want e2, e3, e1", terms)
		}
		want := []string{"e2 evicted_max_envs", "e3 evicted_max_envs", "e1 evicted_max_envs"}
		if st := obs.get(&obs.stopped); !slices.Equal(st, want) {
			t.Fatalf("observed stops %q, want %q", st, want)
		}
		wantStates(t, m, lifecycle.Ready, "n1", "n2", "n3")
		if n := fake.Launcher.Launches(""); n != 6 {
			t.Errorf("%d launches, want 6", n)
		}
	})
}

// Admission never evicts a busy env: the least recently used env with a
// lease held is passed over, and when every env is busy a start is
// refused at once (max_envs, with a Retry-After), makes no sandbox and
// leaves the env stopped.
func TestFakeAdmissionSkipsBusyEnvsAndRefusesWhenAllBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := lifecycletest.NewFake()
		obs := &observed{}
		m := lifecycletest.NewFakeManager(t, lifecycle.Config{Observer: obs, ReapInterval: time.Hour,
			Limits: lifecycle.Limits{MaxEnvs: 2}}, fake)
		old := must(t, <-goAcquire(m, "old")) // held: busy
		advance(time.Second)
		startIdle(t, m, "idle")
		must(t, <-goAcquire(m, "new")) // held: busy
		if terms := fake.EventsOf("term"); !slices.Equal(terms, []string{"idle#1"}) {
			t.Fatalf("evicted %q, want the idle env only", terms)
		}
		began := time.Now()
		_, err := m.Acquire(context.Background(), "refused")
		var ce *lifecycle.CapacityError
		if !errors.As(err, &ce) || ce.Limit != "max_envs" || ce.RetryAfter <= 0 {
			t.Fatalf("err = %v, want a *CapacityError for max_envs with a Retry-After", err)
		}
		if d := time.Since(began); d != 0 {
			t.Errorf("refusal took %v, want none", d)
		}
		if fake.Launcher.Launches("refused") != 0 || slices.Contains(fake.EventsOf("create"), "refused") {
			t.Error("a refused start made a sandbox or launched")
		}
		if s := stateOf(m, "refused"); s != lifecycle.Stopped {
			t.Errorf("refused env is %v, want stopped", s)
		}
		if r := obs.get(&obs.refused); !slices.Equal(r, []string{"refused max_envs"}) {
			t.Errorf("observed refusals %q", r)
		}
		old.Release()
		must(t, <-goAcquire(m, "refused"))
		if terms := fake.EventsOf("term"); !slices.Equal(terms, []string{"idle#1", "old#1"}) {
			t.Fatalf("evicted %q, want idle, then old once released", terms)
		}
	})
}

// Starts beyond MaxStarting wait for a turn, one start at a time: with
// three concurrent starts of a 1s boot, they are ready after exactly 1s,
// 2s and 3s, and no launch overlaps another start.
func TestFakeMaxStartingQueuesStarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := lifecycletest.NewFake()
		fake.Launcher.Behave = behave(lifecycletest.FakeBehaviour{Boot: time.Second})
		m := lifecycletest.NewFakeManager(t, lifecycle.Config{Limits: lifecycle.Limits{MaxStarting: 1}}, fake)
		chs := []<-chan acquired{goAcquire(m, "a"), goAcquire(m, "b"), goAcquire(m, "c")}
		advance(3 * time.Second)
		var colds []time.Duration
		for _, ch := range chs {
			colds = append(colds, must(t, <-ch).Cold)
		}
		slices.Sort(colds)
		if !slices.Equal(colds, []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}) {
			t.Fatalf("cold starts %v, want 1s, 2s, 3s", colds)
		}
		starting := ""
		for _, ev := range fake.Events() {
			verb, who, _ := strings.Cut(ev, " ")
			switch verb {
			case "launch":
				if starting != "" {
					t.Fatalf("%s launched while %s was starting (events %q)", who, starting, fake.Events())
				}
				starting = who
			case "ready":
				starting = ""
			}
		}
	})
}

// Issue 10, item 2: max_envs 3, three idle envs, three concurrent new
// envs: all three start, with exactly three evictions, one per new env
// (the slot an eviction frees goes to the start that made it). Three
// ways: stops that end at once; stops that take the whole grace, so that
// the three starts choose their victims while the others' are still on
// their way out; and one idle env already being stopped by an operator
// when the three arrive, so that one start waits for its slot and only
// two are evicted. Each runs many times: the starts interleave
// differently each time.
func TestFakeConcurrentStartsAtMaxEnvsEachEvictOne(t *testing.T) {
	for _, tc := range []struct {
		name      string
		slowStops bool
		operator  bool // e3 is being stopped when the starts come
		evicted   []string
		colds     []time.Duration
	}{
		{name: "quick stops", evicted: []string{"e1", "e2", "e3"}, colds: []time.Duration{0, 0, 0}},
		{name: "slow stops", slowStops: true, evicted: []string{"e1", "e2", "e3"},
			colds: []time.Duration{5 * time.Second, 5 * time.Second, 5 * time.Second}},
		{name: "one env already stopping", operator: true, evicted: []string{"e1", "e2"},
			colds: []time.Duration{0, 0, 5 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 25 {
				synctest.Test(t, func(t *testing.T) { concurrentStartsAtMaxEnvs(t, tc.slowStops, tc.operator, tc.evicted, tc.colds) })
				if t.Failed() {
					return
				}
			}
		})
	}
}

func concurrentStartsAtMaxEnvs(t *testing.T, slowStops, operator bool, wantEvicted []string, wantColds []time.Duration) {
	fake := lifecycletest.NewFake()
	fake.Launcher.Behave = func(env string, _ int) lifecycletest.FakeBehaviour {
		// Stops take the 5s grace: SIGTERM is ignored.
		return lifecycletest.FakeBehaviour{IgnoreTerm: slowStops && strings.HasPrefix(env, "e") || operator && env == "e3"}
	}
	log := &eventLog{}
	obs := &observed{}
	m := lifecycletest.NewFakeManager(t, lifecycle.Config{Observer: obs, ReapInterval: time.Hour,
		Limits: lifecycle.Limits{MaxEnvs: 3}, Log: zerolog.New(io.MultiWriter(zerolog.NewTestWriter(t), log))}, fake)
	startIdle(t, m, "e1", "e2", "e3")
	stopped := make(chan bool, 1)
	if operator {
		go func() { stopped <- m.Stop("e3", "test") }()
		synctest.Wait()
	}
	chs := []<-chan acquired{goAcquire(m, "a"), goAcquire(m, "b"), goAcquire(m, "c")}
	synctest.Wait()
	advance(5 * time.Second)
	var colds []time.Duration
	for _, ch := range chs {
		select {
		case r := <-ch:
			colds = append(colds, must(t, r).Cold)
		default:
			t.Fatalf("a start still waits 5s on (events %q)", fake.Events())
		}
	}
	slices.Sort(colds)
	if !slices.Equal(colds, wantColds) {
		t.Errorf("cold starts %v, want %v", colds, wantColds)
	}
	if operator && !<-stopped {
		t.Error("the operator's Stop stopped nothing")
	}
	if r := obs.get(&obs.refused); len(r) > 0 {
		t.Errorf("refused %q", r)
	}
	// Exactly the evictions wanted, each for a different new env.
	var evicted, heirs []string
	for _, ev := range log.evictions() {
		env, reason, _ := strings.Cut(ev, " ")
		heir, ok := strings.CutPrefix(reason, "(evicted: max_envs (to start ")
		if !ok {
			t.Fatalf("eviction %q", ev)
		}
		evicted = append(evicted, env)
		heirs = append(heirs, strings.TrimSuffix(heir, "))"))
	}
	slices.Sort(evicted)
	slices.Sort(heirs)
	if !slices.Equal(evicted, wantEvicted) || len(slices.Compact(heirs)) != len(wantEvicted) {
		t.Errorf("evictions %q, want one each of %q for different new envs", log.evictions(), wantEvicted)
	}
	wantStates(t, m, lifecycle.Stopped, "e1", "e2", "e3")
	wantStates(t, m, lifecycle.Ready, "a", "b", "c")
	if n := fake.Launcher.Launches(""); n != 6 {
		t.Errorf("%d launches, want 6", n)
	}
}

// The count of consecutive failures survives the reaper while requests
// keep coming: a client asking every 2s for a dev server that always fails
// at boot launches it at 0.5s, 2.5s, 4.5s, 6.5s, 10.5s, 18.5s and 34.5s
// (backoffs of 1s, 2s, 4s, 8s, 16s, 32s), seven times in a minute, not
// once per request. The requests are half a second off the reap ticks.
func TestFakeBackoffSurvivesTheReaper(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := lifecycletest.NewFake()
		fake.Launcher.Behave = behave(lifecycletest.FakeBehaviour{ExitAtBoot: "exit status 1"})
		m := lifecycletest.NewFakeManager(t, lifecycle.Config{ReapInterval: time.Second}, fake)
		began := time.Now()
		advance(500 * time.Millisecond)
		var launchedAt []time.Duration
		for range 30 {
			before := fake.Launcher.Launches("a")
			startError(t, (<-goAcquire(m, "a")).err)
			if fake.Launcher.Launches("a") > before {
				launchedAt = append(launchedAt, time.Since(began))
			}
			advance(2 * time.Second)
		}
		want := []time.Duration{500 * time.Millisecond, 2500 * time.Millisecond, 4500 * time.Millisecond,
			6500 * time.Millisecond, 10500 * time.Millisecond, 18500 * time.Millisecond, 34500 * time.Millisecond}
		if !slices.Equal(launchedAt, want) {
			t.Fatalf("launched at %v, want %v", launchedAt, want)
		}
	})
}

// When available memory is below the floor, a start evicts idle envs by
// memory, the largest first (ties: the least recently used), as many as
// it takes to get back above the floor and no more; when nothing is idle
// it is refused at once (min_available_memory).
func TestFakeMemoryFloorEvictsLargestFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const gib = 1 << 30
		fake := lifecycletest.NewFake()
		memory := map[string]int64{"e1": 1 * gib, "e2": 3 * gib}
		fake.Launcher.Behave = func(env string, _ int) lifecycletest.FakeBehaviour {
			if m, ok := memory[env]; ok {
				return lifecycletest.FakeBehaviour{Memory: m}
			}
			return lifecycletest.FakeBehaviour{Memory: 2 * gib}
		}
		obs := &observed{}
		m := lifecycletest.NewFakeManager(t, lifecycle.Config{Observer: obs, ReapInterval: time.Hour,
			Limits:          lifecycle.Limits{MinAvailableMemory: 5 * gib},
			AvailableMemory: func() (int64, error) { return 10*gib - fake.Launcher.MemoryInUse(), nil }}, fake)
		startIdle(t, m, "e1", "e2", "e3") // 4 GiB left
		startIdle(t, m, "n1")             // evicts e2 (3 GiB): 5 GiB left
		startIdle(t, m, "n2")             // at the floor: no eviction, 3 GiB left
		if terms := fake.EventsOf("term"); !slices.Equal(terms, []string{"e2#1"}) {
			t.Fatalf("evicted %q, want e2 (the largest)", terms)
		}
		startIdle(t, m, "n3") // e3, n1, n2 use 2 GiB each: e3 is the least recently used
		if terms := fake.EventsOf("term"); !slices.Equal(terms, []string{"e2#1", "e3#1"}) {
			t.Fatalf("evicted %q, want e2, then e3", terms)
		}
		want := []string{"e2 evicted_memory", "e3 evicted_memory"}
		if st := obs.get(&obs.stopped); !slices.Equal(st, want) {
			t.Fatalf("observed stops %q, want %q", st, want)
		}
		for _, n := range []string{"e1", "n1", "n2", "n3"} {
			must(t, <-goAcquire(m, n)) // held: busy
		}
		_, err := m.Acquire(context.Background(), "refused")
		var ce *lifecycle.CapacityError
		if !errors.As(err, &ce) || ce.Limit != "min_available_memory" {
			t.Fatalf("err = %v, want a *CapacityError for min_available_memory", err)
		}
		if n := fake.Launcher.Launches("refused"); n != 0 {
			t.Fatalf("a refused start launched %d", n)
		}
	})
}
