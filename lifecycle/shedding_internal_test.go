package lifecycle

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"
)

// heldNetwork is a Network whose Create blocks until release is closed and
// then fails: a start in Create holds its turn for as long as a test
// wants, and nothing real is ever made.
type heldNetwork struct {
	release chan struct{}
	creates atomic.Int64
	mu      sync.Mutex
	names   []string // guarded by mu; every Create, in order
}

func (n *heldNetwork) Create(ctx context.Context, name string) (Sandbox, error) {
	n.creates.Add(1)
	n.mu.Lock()
	n.names = append(n.names, name)
	n.mu.Unlock()
	select {
	case <-n.release:
	case <-ctx.Done():
	}
	return nil, errors.New("held network: no sandboxes here")
}

func (n *heldNetwork) Destroy(Sandbox) error { return nil }

// refusingLauncher starts nothing: no start gets past heldNetwork.
type refusingLauncher struct{}

func (refusingLauncher) Launch(context.Context, LaunchRequest) (Process, error) {
	return nil, errors.New("refusing launcher: no dev servers here")
}

// newHeldManager runs a Manager over a heldNetwork, one start at a time
// and at most queued starts waiting. Call it inside a synctest bubble.
func newHeldManager(t *testing.T, queued int) (*Manager, *heldNetwork) {
	t.Helper()
	tp := &Template{Name: "held", Command: []string{"true"}, Port: 3000, Ready: Probe{Timeout: 20 * time.Second}}
	if err := tp.Prepare(); err != nil {
		t.Fatal(err)
	}
	n := &heldNetwork{release: make(chan struct{})}
	m, err := New(Config{
		Templates: []*Template{tp},
		DataRoot:  t.TempDir(),
		Network:   n,
		Launcher:  refusingLauncher{},
		Limits:    Limits{MaxStarting: 1, MaxQueuedStarts: queued},
		Log:       zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Cleanups run outside the bubble: the test closes m itself.
		if m.ctx.Err() == nil {
			t.Error("test did not close the manager")
		}
	})
	return m, n
}

// closeHeld lets held starts fail and closes m.
func closeHeld(t *testing.T, m *Manager, n *heldNetwork) {
	t.Helper()
	select {
	case <-n.release:
	default:
		close(n.release)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Errorf("close: %v", err)
	}
}

// acquireAsync runs Acquire on a goroutine; its result arrives on the
// returned channel.
func acquireAsync(ctx context.Context, m *Manager, name string) <-chan error {
	ch := make(chan error, 1)
	go func() {
		l, err := m.Acquire(ctx, name)
		if l != nil {
			l.Release()
		}
		ch <- err
	}()
	return ch
}

func stateNow(m *Manager, name string) State {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.envs[name]; e != nil {
		return e.State()
	}
	return Stopped
}

// A start queued behind MaxStarting whose every caller has gone is
// dropped before it begins: no sandbox is made for it, the queue place
// is free, and the next Acquire starts the env afresh, without backoff.
func TestQueuedStartDroppedWhenEveryWaiterLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, n := newHeldManager(t, 4)
		defer closeHeld(t, m, n)
		holder := acquireAsync(context.Background(), m, "holder")
		synctest.Wait()
		if c := n.creates.Load(); c != 1 {
			t.Fatalf("creates = %d, want 1 (the holder)", c)
		}

		ctx1, cancel1 := context.WithCancel(context.Background())
		ctx2, cancel2 := context.WithCancel(context.Background())
		w1 := acquireAsync(ctx1, m, "queued")
		w2 := acquireAsync(ctx2, m, "queued")
		synctest.Wait()
		if s := stateNow(m, "queued"); s != Starting {
			t.Fatalf("queued env is %v, want starting", s)
		}
		// Its entry, kept: once dropped, the reaper may forget it.
		m.mu.Lock()
		e := m.envs["queued"]
		m.mu.Unlock()
		if q := m.queuedStarts.Load(); q != 1 {
			t.Fatalf("queued starts = %d, want 1 (two callers, one start)", q)
		}
		// One caller leaving is not enough.
		cancel1()
		if err := <-w1; !errors.Is(err, context.Canceled) {
			t.Fatalf("first caller: %v, want context.Canceled", err)
		}
		time.Sleep(2 * abandonGrace)
		synctest.Wait()
		if s := stateNow(m, "queued"); s != Starting {
			t.Fatalf("with one caller left the env is %v, want starting", s)
		}
		cancel2()
		<-w2
		// Dropped once the grace has passed, not before.
		time.Sleep(abandonGrace - time.Millisecond)
		synctest.Wait()
		if s := stateNow(m, "queued"); s != Starting {
			t.Fatalf("within the grace the env is %v, want starting", s)
		}
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		if s := stateNow(m, "queued"); s != Stopped {
			t.Fatalf("abandoned env is %v, want stopped", s)
		}
		if q := m.queuedStarts.Load(); q != 0 {
			t.Fatalf("queued starts = %d after the drop, want 0", q)
		}

		close(n.release)
		if err := <-holder; err == nil {
			t.Fatal("holder started on a network that makes nothing")
		}
		synctest.Wait()
		if c := n.creates.Load(); c != 1 {
			t.Fatalf("creates = %d, want 1: the dropped start made a sandbox", c)
		}
		e.mu.Lock()
		failures, failure := e.failures, e.failure
		e.mu.Unlock()
		if failures != 0 || failure != nil {
			t.Fatalf("dropped start left failures %d, %v: want a clean slate", failures, failure)
		}
		// The next visitor starts it afresh, at once.
		err := <-acquireAsync(context.Background(), m, "queued")
		var se *StartError
		if !errors.As(err, &se) || n.creates.Load() != 2 {
			t.Fatalf("next acquire: %v, creates %d; want a new start (which the held network fails)", err, n.creates.Load())
		}
	})
}

// A waiting page that polls a start's progress keeps it queued after the
// browser's first, short Acquire has ended.
func TestQueuedStartKeptWhileWaitingPagePolls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, n := newHeldManager(t, 4)
		defer closeHeld(t, m, n)
		acquireAsync(context.Background(), m, "holder")
		synctest.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
		defer cancel()
		if err := <-acquireAsync(ctx, m, "browsed"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("short wait: %v, want deadline exceeded", err)
		}
		for range 20 { // 6 s of polls, three times the grace
			if _, err := m.Progress("browsed", 0); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
			synctest.Wait()
			if s := stateNow(m, "browsed"); s != Starting {
				t.Fatalf("polled start is %v, want starting", s)
			}
		}
		time.Sleep(abandonGrace)
		synctest.Wait()
		if s := stateNow(m, "browsed"); s != Stopped {
			t.Fatalf("start no longer polled is %v, want stopped (dropped)", s)
		}
	})
}

// Past MaxQueuedStarts a start is refused at once with a *CapacityError
// that carries a Retry-After; the queued ones keep their places.
func TestStartQueueBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, n := newHeldManager(t, 2)
		defer closeHeld(t, m, n)
		acquireAsync(context.Background(), m, "holder")
		synctest.Wait()
		q1 := acquireAsync(context.Background(), m, "q1")
		q2 := acquireAsync(context.Background(), m, "q2")
		synctest.Wait()
		began := time.Now()
		_, err := m.Acquire(context.Background(), "q3")
		var ce *CapacityError
		if !errors.As(err, &ce) || !errors.Is(err, ErrAtCapacity) || ce.Limit != "max_queued_starts" || ce.RetryAfter <= 0 {
			t.Fatalf("third queued start: %v, want *CapacityError max_queued_starts with RetryAfter", err)
		}
		if waited := time.Since(began); waited != 0 {
			t.Fatalf("refusal took %v of (fake) time, want none", waited)
		}
		if s := stateNow(m, "q3"); s != Stopped {
			t.Fatalf("refused env is %v, want stopped", s)
		}
		if q := m.queuedStarts.Load(); q != 2 {
			t.Fatalf("queued starts = %d, want 2", q)
		}
		// The queue moves: each queued start gets its turn (and fails on
		// this network), and then q3 may queue again.
		close(n.release)
		for _, ch := range []<-chan error{q1, q2} {
			var se *StartError
			if err := <-ch; !errors.As(err, &se) {
				t.Fatalf("queued start: %v, want the held network's StartError", err)
			}
		}
		if c := n.creates.Load(); c != 3 {
			t.Fatalf("creates = %d, want 3", c)
		}
	})
}
