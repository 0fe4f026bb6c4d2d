package lifecycle

import (
	"context"
	"errors"
	"sync"
	"time"
)

// abandonGrace is how long a start that nobody waits for any more stays
// queued before it is dropped. A browser's first, short wait ends
// before its waiting page polls the start's progress (Progress), every
// few hundred milliseconds; the grace bridges that gap, and a poll counts
// as a waiter for as long again.
const abandonGrace = 2 * time.Second

// errStartDropped ends a start that had not begun when every caller
// waiting for it had gone: it made nothing, and the next Acquire starts
// the env afresh.
var errStartDropped = errors.New("lifecycle: start dropped: nobody waits for it")

// addWaiter counts an Acquire call waiting for a start of e.
func (e *env) addWaiter() {
	e.mu.Lock()
	e.waiters++
	e.mu.Unlock()
}

// removeWaiter ends what addWaiter began.
func (e *env) removeWaiter() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.waiters--
	if e.waiters == 0 {
		e.leftAt = time.Now()
		if e.unwatched != nil {
			close(e.unwatched)
			e.unwatched = nil
		}
	}
}

// awaited reports whether Acquire calls wait for a start of e, or have
// yet to take their leases from one that has ended.
func (e *env) awaited() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.waiters > 0
}

// abandoned reports whether nobody waits for e's start: no Acquire call
// waits, and none left nor did a waiting page poll within abandonGrace.
// Otherwise it returns a channel that fires when that is worth asking
// again.
func (e *env) abandoned(now time.Time) (bool, <-chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.waiters > 0 {
		if e.unwatched == nil {
			e.unwatched = make(chan struct{})
		}
		return false, e.unwatched
	}
	last := e.leftAt
	if p := time.Unix(0, e.polledAt.Load()); p.After(last) {
		last = p
	}
	if wait := last.Add(abandonGrace).Sub(now); wait > 0 {
		return false, afterChan(wait)
	}
	return true, nil
}

// afterChan is a channel closed after d.
func afterChan(d time.Duration) <-chan struct{} {
	ch := make(chan struct{})
	time.AfterFunc(d, func() { close(ch) })
	return ch
}

// whileWanted returns a context that ends, with cause errStartDropped,
// once nobody waits for e's start any more, and a stop function that
// ends the watch and waits for it. Call stop before the start begins:
// after it, ctx's cause says whether the start was dropped.
func (m *Manager) whileWanted(parent context.Context, e *env) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			gone, wake := e.abandoned(time.Now())
			if gone {
				cancel(errStartDropped)
				return
			}
			select {
			case <-wake:
			case <-quit:
				return
			case <-ctx.Done():
				return
			}
		}
	})
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			close(quit)
			wg.Wait()
		})
	}
}
