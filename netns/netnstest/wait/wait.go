// Package wait polls for a condition in tests, for when the code under
// test offers nothing to wait on (no channel, callback or hook): a file
// another process writes, a line in a log, a goroutine count, a listener
// that stops accepting. Prefer the signal when there is one.
//
// A poll ends as soon as its condition holds, so a test's outcome never
// depends on a guessed duration: the timeout is a backstop for broken
// code, set far above what the condition needs on a loaded machine, and
// it only decides how long a failing test takes to fail.
package wait

import (
	"testing"
	"time"
)

// maxPause bounds the pause between two looks at the condition.
const maxPause = 50 * time.Millisecond

// Until calls cond until it returns true or timeout has passed, and
// reports whether it did. It looks again at once and then less often
// (1 ms, doubling up to 50 ms), so a condition that holds soon costs
// little latency and one that takes seconds costs little CPU. cond runs
// on the caller's goroutine, and once more when the timeout is reached.
func Until(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for pause := time.Millisecond; ; pause = min(2*pause, maxPause) {
		if cond() {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		time.Sleep(min(pause, left))
	}
}

// For is Until that fails the test (t.Fatalf, so only from the test's
// goroutine) when cond does not hold within timeout; what names the
// condition in the message ("bob admitted", "the pid file").
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Until(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}
