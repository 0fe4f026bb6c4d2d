package sources

import (
	"testing"
	"time"
)

// TestEnvLocks: one env's lock excludes a second holder of the same env
// until let go, never another env's; the map forgets an env once nobody
// holds or waits for it.
func TestEnvLocks(t *testing.T) {
	var l envLocks
	unlockA := l.lock("a")
	l.lock("b")() // another env: not blocked by a
	got, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		unlock := l.lock("a")
		close(got)
		unlock()
	}()
	select {
	case <-got:
		t.Fatal("a second holder got env a's lock while the first held it")
	case <-time.After(50 * time.Millisecond):
	}
	unlockA()
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not get env a's lock once it was let go")
	}
	<-done
	l.mu.Lock()
	n := len(l.locks)
	l.mu.Unlock()
	if n != 0 {
		t.Errorf("%d env locks kept with nobody holding them", n)
	}
}
