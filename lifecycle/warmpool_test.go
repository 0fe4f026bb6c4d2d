package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/netns/netnstest/wait"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
)

// spares lists the warm spare namespaces of f.
func spares(f *fixture) []string {
	ids, _ := f.NSM.List()
	var out []string
	for _, id := range ids {
		if strings.HasPrefix(id, "warm--") {
			out = append(out, id)
		}
	}
	return out
}

func waitSpares(t *testing.T, f *fixture, n int) {
	t.Helper()
	wait.For(t, 20*time.Second, fmt.Sprintf("%d spares", n), func() bool { return len(spares(f)) == n })
}

func TestWarmPoolGivesColdStartAReadySandbox(t *testing.T) {
	f := newFixture(t, lifecycle.Config{
		Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{})},
		WarmPool:  2,
	})
	// The first Acquire starts the pool (after any Recover); it may or
	// may not find a spare yet.
	acquire(t, f.M, "first").Release()
	waitSpares(t, f, 2)
	made := f.Net.Creates.Load()
	l := acquire(t, f.M, "second")
	defer l.Release()
	if p := getPage(t, l); p.Env != "second" {
		t.Fatalf("page %+v", p)
	}
	// The env took a spare, renamed after it (ip netns shows env names),
	// and the pool made one more in the background.
	ids, _ := f.NSM.List()
	if !slices.Contains(ids, "second") {
		t.Fatalf("namespaces %v lack the env's", ids)
	}
	waitSpares(t, f, 2)
	if c := f.Net.Creates.Load(); c != made+1 {
		t.Fatalf("%d sandboxes made for one start with a spare ready, want 1 (the refill)", c-made)
	}
	if _, err := f.M.Acquire(context.Background(), "warm--9"); !errors.Is(err, lifecycle.ErrNoTemplate) {
		t.Fatalf("acquire of a spare's name: %v, want refused", err)
	}
}
