package sources

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envgate/envgate/lifecycle/envname"
	"github.com/rs/zerolog"
)

// Git is the env source of a repository with previews: it allows the
// labels of the mirror's branches (see envname.Labels), refreshes the mirror in
// the background, and with checkouts gives each env a worktree of its
// branch (lifecycle.Checkouts).
type Git struct {
	mirror *Mirror
	log    zerolog.Logger
	// onChange is called after a refresh with the labels whose head
	// commit moved and the labels that are gone.
	onChange atomic.Pointer[func(moved, gone []string)]

	state     atomic.Pointer[gitState]
	refreshMu sync.Mutex // serialises whole refreshes, so a move is reported once
	envs      envLocks   // one env's checkout and its removal, one at a time
	cancel    context.CancelFunc
	done      chan struct{}
	close     sync.Once
	kick      chan struct{}
}

type gitState struct {
	labels map[string]string // label -> branch
	heads  map[string]string // branch -> commit
}

// GitConfig configures NewGit.
type GitConfig struct {
	Mirror  Mirror
	Refresh time.Duration
	Log     zerolog.Logger
}

// NewGit clones or fetches the mirror now, failing if it cannot, then
// again every Refresh (and at each Refresh call) until Close or ctx ends.
func NewGit(ctx context.Context, cfg GitConfig) (*Git, error) {
	g := &Git{mirror: &cfg.Mirror, log: cfg.Log, done: make(chan struct{}), kick: make(chan struct{}, 1)}
	g.state.Store(&gitState{})
	if err := g.sync(ctx); err != nil {
		return nil, err
	}
	every := cfg.Refresh
	if every <= 0 {
		every = 5 * time.Minute
	}
	ctx, g.cancel = context.WithCancel(ctx)
	go g.loop(ctx, every)
	return g, nil
}

// Allow allows the labels of the mirror's branches.
func (g *Git) Allow(name string) error {
	if _, ok := g.state.Load().labels[name]; !ok {
		return fmt.Errorf("repository %s has no branch for %s", g.mirror.Repo, name)
	}
	return nil
}

// Branch returns the branch and head commit of env name.
func (g *Git) Branch(name string) (branch, commit string, ok bool) {
	st := g.state.Load()
	branch, ok = st.labels[name]
	return branch, st.heads[branch], ok
}

// Label returns branch's env name, "" if it has none.
func (g *Git) Label(branch string) string {
	for l, b := range g.state.Load().labels {
		if b == branch {
			return l
		}
	}
	return ""
}

// OnChange sets fn to be called after each refresh that changed
// something, on the refresh goroutine with no lock held, with the labels
// whose branch moved to a new commit and those whose branch is gone.
func (g *Git) OnChange(fn func(moved, gone []string)) { g.onChange.Store(&fn) }

// Refresh asks for a fetch now (a webhook said something changed); it
// does not wait for it.
func (g *Git) Refresh() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// Close stops the refresh loop and waits for it.
func (g *Git) Close() {
	g.close.Do(func() {
		g.cancel()
		<-g.done
	})
}

// Checkout implements lifecycle.Checkouts: env's worktree at its
// branch's head. Checkouts of different envs run side by side; one env's
// checkout and the removal of its worktree wait for each other (a
// request may start an env again while its destroy is removing it).
func (g *Git) Checkout(ctx context.Context, env string, uid, gid int) (dir, commit string, err error) {
	_, commit, ok := g.Branch(env)
	if !ok {
		return "", "", fmt.Errorf("sources: no branch for env %s", env)
	}
	defer g.envs.lock(env)()
	dir, err = g.mirror.Worktree(ctx, env, commit, uid, gid)
	return dir, commit, err
}

// RemoveCheckout removes env's worktree.
func (g *Git) RemoveCheckout(ctx context.Context, env string) error {
	defer g.envs.lock(env)()
	return g.mirror.RemoveWorktree(ctx, env)
}

// envLocks is a mutex per env name, each kept while someone holds or
// waits for it.
type envLocks struct {
	mu    sync.Mutex
	locks map[string]*envLock // guarded by mu
}

type envLock struct {
	sync.Mutex
	refs int // holders and waiters; guarded by envLocks.mu
}

// lock locks env's mutex and returns the function that unlocks it.
func (l *envLocks) lock(env string) (unlock func()) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = make(map[string]*envLock)
	}
	el := l.locks[env]
	if el == nil {
		el = &envLock{}
		l.locks[env] = el
	}
	el.refs++
	l.mu.Unlock()
	el.Lock()
	return func() {
		el.Unlock()
		l.mu.Lock()
		if el.refs--; el.refs == 0 {
			delete(l.locks, env)
		}
		l.mu.Unlock()
	}
}

func (g *Git) loop(ctx context.Context, every time.Duration) {
	defer close(g.done)
	t := time.NewTicker(every)
	defer t.Stop()
	failing := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-g.kick:
		}
		err := g.sync(ctx)
		switch {
		case err != nil && ctx.Err() == nil && err.Error() != failing:
			failing = err.Error()
			g.log.Warn().Err(err).Str("repo", g.mirror.Repo).Msg("git mirror refresh failed; keeping the last branches read")
		case err == nil && failing != "":
			failing = ""
			g.log.Info().Str("repo", g.mirror.Repo).Msg("git mirror refreshed again")
		}
	}
}

// Sync fetches now and waits for it, then tells OnChange what moved.
func (g *Git) Sync(ctx context.Context) error { return g.sync(ctx) }

// sync fetches, reads the heads and swaps the new state in, then tells
// OnChange what moved.
func (g *Git) sync(ctx context.Context) error {
	g.refreshMu.Lock()
	defer g.refreshMu.Unlock()
	err := g.mirror.Sync(ctx)
	var heads map[string]string
	if err == nil {
		heads, err = g.mirror.Heads(ctx)
	}
	if err != nil {
		return err
	}
	branches := make([]string, 0, len(heads))
	for b := range heads {
		branches = append(branches, b)
	}
	cur := &gitState{labels: envname.Labels(branches), heads: heads}
	old := g.state.Swap(cur)
	var moved, gone []string
	for l, b := range old.labels {
		nb, ok := cur.labels[l]
		switch {
		case !ok || nb != b:
			gone = append(gone, l)
		case old.heads[b] != heads[b]:
			moved = append(moved, l)
		}
	}
	if old.labels != nil && (len(moved) > 0 || len(gone) > 0) {
		g.log.Info().Strs("moved", moved).Strs("gone", gone).Int("envs", len(cur.labels)).Msg("git branches changed")
		if fn := g.onChange.Load(); fn != nil {
			(*fn)(moved, gone)
		}
	}
	return nil
}
