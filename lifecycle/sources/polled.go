package sources

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// readTimeout bounds one read of a dir or git source, so a hung
// filesystem or git never stops the refresh loop for good.
const readTimeout = 30 * time.Second

// polled allows the names its read function last returned. Allow only
// loads a pointer; the reads happen on the refresh goroutine.
type polled struct {
	what      string // "directory /srv/checkouts", for messages
	names     atomic.Pointer[map[string]struct{}]
	read      func(context.Context) (map[string]struct{}, error)
	onRefresh func(error) // if set, called after each background read (tests)
	log       zerolog.Logger
	cancel    context.CancelFunc
	done      chan struct{}
	closeMu   sync.Once

	failing string // the last read's error, "" after a good read; refresh goroutine only
}

// newPolled reads once now, failing if it cannot, then starts the
// refresh goroutine. onRefresh may be nil.
func newPolled(ctx context.Context, what string, refresh time.Duration, log zerolog.Logger,
	read func(context.Context) (map[string]struct{}, error), onRefresh func(error)) (*polled, error) {
	if refresh <= 0 {
		refresh = DefaultRefresh
	}
	s := &polled{what: what, read: read, onRefresh: onRefresh, log: log, done: make(chan struct{})}
	rctx, cancel := context.WithTimeout(ctx, readTimeout)
	set, err := read(rctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("sources: env source %s: %w", what, err)
	}
	s.names.Store(&set)
	log.Info().Str("source", what).Int("envs", len(set)).Dur("refresh", refresh).Msg("env source read")
	ctx, s.cancel = context.WithCancel(ctx)
	go s.refreshLoop(ctx, refresh)
	return s, nil
}

func (s *polled) Allow(name string) error {
	if _, ok := (*s.names.Load())[name]; !ok {
		return fmt.Errorf("%s has no %s", s.what, name)
	}
	return nil
}

// Close stops the refresh goroutine and waits for it.
func (s *polled) Close() {
	s.closeMu.Do(func() {
		s.cancel()
		<-s.done
	})
}

func (s *polled) refreshLoop(ctx context.Context, every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if ran, err := s.refresh(ctx); ran && s.onRefresh != nil {
				s.onRefresh(err)
			}
		}
	}
}

// refresh reads the source once and swaps the new set in; on failure the
// last good set stays, with one warning per distinct error rather than one
// per interval. ran is false when closing cut the read short.
func (s *polled) refresh(ctx context.Context) (ran bool, err error) {
	rctx, cancel := context.WithTimeout(ctx, readTimeout)
	set, err := s.read(rctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return false, err // closing: the read was cut short, not broken
		}
		if msg := err.Error(); msg != s.failing {
			s.failing = msg
			s.log.Warn().Err(err).Str("source", s.what).Msg("env source unreadable; keeping the last names read")
		}
		return true, err
	}
	if s.failing != "" {
		s.failing = ""
		s.log.Info().Str("source", s.what).Msg("env source readable again")
	}
	old := *s.names.Load()
	s.names.Store(&set)
	added, removed := diffCount(old, set)
	if added > 0 || removed > 0 {
		s.log.Info().Str("source", s.what).Int("envs", len(set)).Int("added", added).Int("removed", removed).
			Msg("env source changed")
	}
	return true, nil
}

func diffCount(old, cur map[string]struct{}) (added, removed int) {
	for n := range cur {
		if _, ok := old[n]; !ok {
			added++
		}
	}
	for n := range old {
		if _, ok := cur[n]; !ok {
			removed++
		}
	}
	return added, removed
}
