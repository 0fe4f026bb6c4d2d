package wait

import (
	"runtime"
	"testing"
	"testing/synctest"
	"time"
)

func TestUntilHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		began := time.Now()
		if !Until(time.Minute, func() bool { calls++; return calls == 3 }) {
			t.Fatal("Until gave up on a condition that held on its third look")
		}
		if calls != 3 {
			t.Fatalf("cond called %d times, want 3 (it stops once cond holds)", calls)
		}
		if took := time.Since(began); took != 3*time.Millisecond {
			t.Fatalf("took %v, want 3ms (pauses of 1ms and 2ms)", took)
		}
	})
}

func TestUntilGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		if Until(0, func() bool { calls++; return false }) {
			t.Fatal("Until reported a condition that never held")
		}
		if calls != 1 {
			t.Fatalf("cond called %d times with no time left, want 1", calls)
		}

		// Pauses of 1, 2, 4, 8, 16, 32 and then 50 ms, the last one cut
		// to the deadline, where cond gets one more look.
		calls = 0
		var at []time.Duration
		began := time.Now()
		if Until(200*time.Millisecond, func() bool { calls++; at = append(at, time.Since(began)); return false }) {
			t.Fatal("Until reported a condition that never held")
		}
		want := []time.Duration{0, 1, 3, 7, 15, 31, 63, 113, 163, 200}
		for i := range want {
			want[i] *= time.Millisecond
		}
		if len(at) != len(want) {
			t.Fatalf("looked at %v, want %v", at, want)
		}
		for i := range want {
			if at[i] != want[i] {
				t.Fatalf("looked at %v, want %v", at, want)
			}
		}
	})
}

// TestForFails: For fails the test when the condition never holds.
func TestForFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ft := &fakeT{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			For(ft, time.Second, "never", func() bool { return false })
		}()
		<-done
		if ft.fatal == "" {
			t.Fatal("For returned without failing the test")
		}
	})
}

type fakeT struct {
	testing.TB
	fatal string
}

func (f *fakeT) Helper() {}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.fatal = format
	runtime.Goexit()
}
