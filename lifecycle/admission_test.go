package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
)

func TestMaxEnvsEvictsLeastRecentlyUsedIdleEnv(t *testing.T) {
	f := newFixture(t, lifecycle.Config{
		Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{})},
		Limits:    lifecycle.Limits{MaxEnvs: 5},
	})
	names := []string{"e1", "e2", "e3", "e4", "e5"}
	for _, n := range names {
		acquire(t, f.M, n).Release()
	}
	// Touch all but e2, so e2 is the least recently used.
	for _, n := range names {
		if n != "e2" {
			acquire(t, f.M, n).Release()
		}
	}
	l := acquire(t, f.M, "e6")
	defer l.Release()
	// e6 waited only for e2's dev server to die; e2's namespace goes
	// away in the background.
	if s := stateOf(f.M, "e2"); s != lifecycle.Stopping && s != lifecycle.Stopped {
		t.Fatalf("e2 (least recently used) is %v, want stopping or stopped", s)
	}
	waitState(t, f.M, "e2", lifecycle.Stopped, 20*time.Second)
	wantStates(t, f.M, lifecycle.Ready, "e1", "e3", "e4", "e5", "e6")
	if ids, _ := f.NSM.List(); len(ids) != 5 || slices.Contains(ids, "e2") {
		t.Fatalf("namespaces %v, want five without e2", ids)
	}
}

func TestAtCapacityWhenEveryEnvIsBusy(t *testing.T) {
	f := newFixture(t, lifecycle.Config{
		Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{})},
		Limits:    lifecycle.Limits{MaxEnvs: 3},
	})
	for i := range 3 {
		l := acquire(t, f.M, fmt.Sprintf("busy%d", i))
		t.Cleanup(l.Release)
	}
	creates := f.Net.Creates.Load()
	// No deadline of our own: a refusal must come at once, not after a wait.
	_, err := f.M.Acquire(context.Background(), "one-too-many")
	var ce *lifecycle.CapacityError
	if !errors.As(err, &ce) || !errors.Is(err, lifecycle.ErrAtCapacity) {
		t.Fatalf("err = %v, want *CapacityError", err)
	}
	if ce.Limit != "max_envs" || ce.RetryAfter <= 0 {
		t.Fatalf("CapacityError %+v, want limit max_envs and a Retry-After", ce)
	}
	if c := f.Net.Creates.Load(); c != creates {
		t.Fatalf("a refused env created a sandbox")
	}
	if s := stateOf(f.M, "one-too-many"); s != lifecycle.Stopped {
		t.Fatalf("refused env is %v, want stopped", s)
	}
}

func TestMemoryFloorEvictsIdleAndRefusesWhenAllBusy(t *testing.T) {
	var fp atomic.Pointer[fixture]
	f := newFixture(t, lifecycle.Config{
		Templates:       []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{})},
		Limits:          lifecycle.Limits{MinAvailableMemory: 5 << 30},
		AvailableMemory: lifecycletest.FakeMemory(&fp),
		ReapInterval:    20 * time.Millisecond,
	})
	fp.Store(f)
	a := acquire(t, f.M, "mem-a") // 7 GiB left
	b := acquire(t, f.M, "mem-b") // 4 GiB left: below the floor
	_, err := f.M.Acquire(context.Background(), "mem-c")
	var ce *lifecycle.CapacityError
	if !errors.As(err, &ce) || ce.Limit != "min_available_memory" {
		t.Fatalf("err = %v, want *CapacityError for min_available_memory", err)
	}
	// Once b is idle the reaper evicts it to get back above the floor;
	// a, still busy, stays.
	b.Release()
	waitState(t, f.M, "mem-b", lifecycle.Stopped, 20*time.Second)
	if s := stateOf(f.M, "mem-a"); s != lifecycle.Ready {
		t.Fatalf("busy env is %v, want ready", s)
	}
	a.Release()
	c := acquire(t, f.M, "mem-c")
	c.Release()
}

// turnNetwork checks, at each sandbox creation, that no other env is
// between creation and ready: MaxStarting 1 means one start at a time.
type turnNetwork struct {
	*lifecycletest.CountingNetwork
	m       **lifecycle.Manager
	mu      sync.Mutex
	overlap []string
}

func (n *turnNetwork) Create(ctx context.Context, name string) (lifecycle.Sandbox, error) {
	ids, _ := n.M.List()
	for _, in := range (*n.m).List() {
		if in.State == lifecycle.Starting && slices.Contains(ids, in.Name) {
			n.mu.Lock()
			n.overlap = append(n.overlap, name+" while "+in.Name)
			n.mu.Unlock()
		}
	}
	return n.CountingNetwork.Create(ctx, name)
}

func TestMaxStartingQueuesStarts(t *testing.T) {
	f := newFixture(t, lifecycle.Config{
		Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{BootDelay: 100 * time.Millisecond})},
		Limits:    lifecycle.Limits{MaxStarting: 1},
	})
	tn := &turnNetwork{CountingNetwork: f.Net, m: &f.M}
	m2, err := lifecycle.New(lifecycle.Config{
		Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{BootDelay: 100 * time.Millisecond})},
		DataRoot:  f.DataDir,
		Network:   tn,
		Launcher:  lifecycletest.Launcher(t, devserver.Config{DataRoot: f.DataDir}),
		Limits:    lifecycle.Limits{MaxStarting: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	tn.m = &m2
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		m2.Close(ctx)
	})
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			l, err := m2.Acquire(ctx, fmt.Sprintf("q%d", i))
			if err == nil {
				l.Release()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("queued starts failed: %v", err)
	}
	if len(tn.overlap) > 0 {
		t.Fatalf("starts overlapped with MaxStarting 1: %v", tn.overlap)
	}
}

func TestStartTurnWaitIsBoundedByStartTimeout(t *testing.T) {
	slow := lifecycletest.Demo(lifecycletest.DemoOptions{BootDelay: 3 * time.Second})
	slow.Name, slow.Match = "slow", "slow-*"
	fast := withTimeout(lifecycletest.Demo(lifecycletest.DemoOptions{}), 300*time.Millisecond)
	fast.Name, fast.Match = "fast", "fast-*"
	for _, tp := range []*lifecycle.Template{slow, fast} {
		if err := tp.Prepare(); err != nil {
			t.Fatal(err)
		}
	}
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{slow, fast}, Limits: lifecycle.Limits{MaxStarting: 1}})
	go func() {
		if l, err := f.M.Acquire(context.Background(), "slow-one"); err == nil {
			l.Release()
		}
	}()
	waitState(t, f.M, "slow-one", lifecycle.Starting, 20*time.Second)
	_, err := f.M.Acquire(context.Background(), "fast-one")
	var ce *lifecycle.CapacityError
	if !errors.As(err, &ce) || ce.Limit != "max_starting" {
		t.Fatalf("err = %v, want *CapacityError for max_starting", err)
	}
	if s := stateOf(f.M, "fast-one"); s != lifecycle.Stopped {
		t.Fatalf("env refused a turn is %v, want stopped", s)
	}
	waitState(t, f.M, "slow-one", lifecycle.Ready, 20*time.Second)
}

func TestMaxLifetimeStopsIdleEnv(t *testing.T) {
	tp := lifecycletest.Demo(lifecycletest.DemoOptions{Idle: time.Hour})
	tp.MaxLifetime = 300 * time.Millisecond
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{tp}, ReapInterval: 20 * time.Millisecond})
	l := acquire(t, f.M, "aging")
	time.Sleep(500 * time.Millisecond)
	if s := stateOf(f.M, "aging"); s != lifecycle.Ready {
		t.Fatalf("env past max lifetime with a lease held is %v, want ready", s)
	}
	l.Release()
	waitState(t, f.M, "aging", lifecycle.Stopped, 20*time.Second)
}

// A dev server that keeps crashing is restarted on demand, but after the
// second crash in a row only once its backoff has passed; meanwhile
// Acquire answers at once with the crash (exit status, output tail).
func TestRepeatedCrashesBackOff(t *testing.T) {
	tp := lifecycletest.Shell(`echo "booting"; exec timeout -s KILL 0.3 "$DEMO"`, 20*time.Second)
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{tp}})
	for crash := 1; crash <= 2; crash++ {
		acquire(t, f.M, "crashy").Release()
		waitState(t, f.M, "crashy", lifecycle.Failed, 20*time.Second)
	}
	creates := f.Net.Creates.Load()
	_, err := f.M.Acquire(context.Background(), "crashy")
	var se *lifecycle.StartError
	if !errors.As(err, &se) || se.RetryAt.IsZero() || !strings.HasPrefix(se.Reason, "dev server ") {
		t.Fatalf("acquire after two crashes: %v, want the crash with a RetryAt", err)
	}
	if !strings.Contains(strings.Join(se.Tail, "\n"), "booting") {
		t.Fatalf("crash tail %q lacks the server's output", se.Tail)
	}
	if f.Net.Creates.Load() != creates {
		t.Fatal("restarted during the backoff")
	}
	time.Sleep(time.Until(se.RetryAt))
	acquire(t, f.M, "crashy").Release()
	if f.Net.Creates.Load() != creates+1 {
		t.Fatal("not restarted after the backoff")
	}
}
