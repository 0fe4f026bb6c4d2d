package lifecycle_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/rs/zerolog"
)

// TestDestroyCallsAfterDestroy: Destroy removes the data dir and then
// calls AfterDestroy with the env's name, for an env known to the manager
// (a failed start) and for one only on disk; an invalid name calls
// nothing.
func TestDestroyCallsAfterDestroy(t *testing.T) {
	tmpl := &lifecycle.Template{Name: "t", Match: "*", Command: []string{"true"}, Port: 3000}
	if err := tmpl.Prepare(); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	var mu sync.Mutex
	var called []string
	m, err := lifecycle.New(lifecycle.Config{
		Templates: []*lifecycle.Template{tmpl},
		DataRoot:  root,
		Network:   &refusingNetwork{},
		Launcher:  &lifecycletest.RefusingLauncher{},
		AfterDestroy: func(name string) {
			if _, err := os.Stat(filepath.Join(root, name)); !os.IsNotExist(err) {
				t.Errorf("AfterDestroy(%s) before its data dir was removed (%v)", name, err)
			}
			mu.Lock()
			called = append(called, name)
			mu.Unlock()
		},
		Log: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = m.Close(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.Acquire(ctx, "known"); err == nil {
		t.Fatal("Acquire through a refusing network succeeded")
	}
	if err := os.MkdirAll(filepath.Join(root, "ondisk"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"known", "ondisk"} {
		if err := m.Destroy(name); err != nil {
			t.Errorf("Destroy(%s): %v", name, err)
		}
	}
	if err := m.Destroy("../x"); err == nil {
		t.Error("Destroy of a path succeeded")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(called, []string{"known", "ondisk"}) {
		t.Errorf("AfterDestroy called for %v, want [known ondisk]", called)
	}
}
