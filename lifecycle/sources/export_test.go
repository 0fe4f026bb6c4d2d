package sources

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// Refreshes counts a polled source's background reads as they finish, so
// tests wait for real refreshes instead of sleeping.
type Refreshes struct {
	ok, failed atomic.Int64
	signal     chan struct{} // gets a token after each read; capacity 1
}

func newRefreshes() *Refreshes { return &Refreshes{signal: make(chan struct{}, 1)} }

func (r *Refreshes) hook(err error) {
	if err != nil {
		r.failed.Add(1)
	} else {
		r.ok.Add(1)
	}
	select {
	case r.signal <- struct{}{}:
	default: // a token is pending already; the waiter rechecks the counts
	}
}

// Failed is how many background reads have failed so far.
func (r *Refreshes) Failed() int64 { return r.failed.Load() }

// Until returns once cond holds, checking it now and after every
// background read; it fails t if cond still does not hold after 30s, a
// backstop for a broken refresher far above any interval tests use.
func (r *Refreshes) Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-r.signal:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s (%d reads ok, %d failed)", what, r.ok.Load(), r.failed.Load())
		}
	}
}

// NewDirWatched is NewDir with its refreshes counted.
func NewDirWatched(ctx context.Context, path string, refresh time.Duration, log zerolog.Logger) (Source, *Refreshes, error) {
	r := newRefreshes()
	s, err := newDir(ctx, path, refresh, log, r.hook)
	if err != nil {
		return nil, nil, err
	}
	return s, r, nil
}

// NewBranchesWatched is NewBranches with its refreshes counted.
func NewBranchesWatched(ctx context.Context, repo string, refresh time.Duration, log zerolog.Logger) (Source, *Refreshes, error) {
	r := newRefreshes()
	s, err := newBranches(ctx, repo, refresh, log, r.hook)
	if err != nil {
		return nil, nil, err
	}
	return s, r, nil
}
