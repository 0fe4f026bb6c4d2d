package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
)

// ownershipLog is a lifecycle.Ownership that grants claims of the envs
// in mine (tokens 1, 2, ...) and refuses the others, and records every
// claim and release.
type ownershipLog struct {
	mine map[string]bool

	mu       sync.Mutex
	next     int64
	claims   []string // env@token, or env!refused
	releases []string // env@token
}

func (o *ownershipLog) Claim(_ context.Context, env string) (lifecycle.Fence, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.mine[env] {
		o.claims = append(o.claims, env+"!refused")
		return lifecycle.Fence{}, errors.New("owned by node b")
	}
	o.next++
	o.claims = append(o.claims, fmt.Sprintf("%s@%d", env, o.next))
	return lifecycle.Fence{Token: o.next}, nil
}

func (o *ownershipLog) Release(env string, token int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.releases = append(o.releases, fmt.Sprintf("%s@%d", env, token))
}

func (o *ownershipLog) seen() (claims, releases string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return fmt.Sprint(o.claims), fmt.Sprint(o.releases)
}

// TestOwnership: in cluster mode each start claims its env, and an env
// this node does not own is not started (ErrNotOwner, no sandbox made);
// every end of a run releases its claim, with its token, by the time the
// stop returns: a stop, a crash, a failed start.
func TestOwnership(t *testing.T) {
	bad := lifecycletest.Shell(`exit 3`, 10*time.Second)
	bad.Name, bad.Match = "bad", "bad-*"
	bad.Prepare()
	own := &ownershipLog{mine: map[string]bool{"mine": true, "bad-one": true}}
	f := newFixture(t, lifecycle.Config{
		Templates: []*lifecycle.Template{bad, lifecycletest.Demo(lifecycletest.DemoOptions{})},
		Ownership: own,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := f.M.Acquire(ctx, "theirs"); !errors.Is(err, lifecycle.ErrNotOwner) {
		t.Fatalf("acquire of an env another node owns: %v, want ErrNotOwner", err)
	}
	if n := f.Net.Creates.Load(); n != 0 {
		t.Fatalf("%d sandboxes made for an env this node does not own", n)
	}

	l := acquire(t, f.M, "mine")
	l.Release()
	if !f.M.Stop("mine", "test") {
		t.Fatal("mine was not running")
	}
	if c, r := own.seen(); c != "[theirs!refused mine@1]" || r != "[mine@1]" {
		t.Fatalf("after a stop: claims %s, releases %s; want [theirs!refused mine@1], [mine@1]", c, r)
	}

	l = acquire(t, f.M, "mine")
	pid := getPage(t, l).PID
	l.Release()
	syscall.Kill(pid, syscall.SIGKILL)
	waitState(t, f.M, "mine", lifecycle.Failed, 20*time.Second)
	if c, r := own.seen(); c != "[theirs!refused mine@1 mine@2]" || r != "[mine@1 mine@2]" {
		t.Fatalf("after a crash: claims %s, releases %s", c, r)
	}

	if _, err := f.M.Acquire(ctx, "bad-one"); err == nil {
		t.Fatal("bad-one started")
	}
	if c, r := own.seen(); c != "[theirs!refused mine@1 mine@2 bad-one@3]" || r != "[mine@1 mine@2 bad-one@3]" {
		t.Fatalf("after a failed start: claims %s, releases %s", c, r)
	}
}
