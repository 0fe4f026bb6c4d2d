package lifecycle_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/rs/zerolog"
)

// refusingNetwork makes no sandbox: Allowed must never need one, and an
// Acquire through it fails after the env is recorded.
type refusingNetwork struct{ creates atomic.Int64 }

var errNoSandbox = errors.New("no sandbox in this test")

func (n *refusingNetwork) Create(context.Context, string) (lifecycle.Sandbox, error) {
	n.creates.Add(1)
	return nil, errNoSandbox
}

func (n *refusingNetwork) Destroy(lifecycle.Sandbox) error { return nil }

func TestAllowed(t *testing.T) {
	feature := &lifecycle.Template{Name: "feature", Match: "feature-*", Command: []string{"true"}, Port: 3000}
	if err := feature.Prepare(); err != nil {
		t.Fatal(err)
	}
	var refuse atomic.Bool
	net := &refusingNetwork{}
	m, err := lifecycle.New(lifecycle.Config{
		Templates: []*lifecycle.Template{feature},
		DataRoot:  t.TempDir(),
		Network:   net,
		Launcher:  &lifecycletest.RefusingLauncher{},
		Allow: func(name string) error {
			if refuse.Load() || strings.HasSuffix(name, "-blocked") {
				return errors.New("not on the list")
			}
			return nil
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

	tests := []struct {
		name string
		want error
	}{
		{"feature-x", nil},
		{"other-x", lifecycle.ErrNoTemplate},
		{"feature-blocked", lifecycle.ErrNotAllowed},
	}
	for _, tt := range tests {
		err := m.Allowed(tt.name)
		if (tt.want == nil) != (err == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("Allowed(%q) = %v, want %v", tt.name, err, tt.want)
		}
	}
	if got := len(m.List()); got != 0 {
		t.Errorf("Allowed recorded %d envs; it must only ask", got)
	}

	// An env Acquire already knows stays allowed even if the source now
	// refuses it, since Acquire would still serve it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.Acquire(ctx, "feature-known"); !errors.Is(err, errNoSandbox) {
		t.Fatalf("Acquire through a refusing network: %v", err)
	}
	refuse.Store(true)
	if err := m.Allowed("feature-known"); err != nil {
		t.Errorf("known env refused: %v", err)
	}
	if err := m.Allowed("feature-new"); !errors.Is(err, lifecycle.ErrNotAllowed) {
		t.Errorf("new env after the source turned to refusing: %v", err)
	}
	if net.creates.Load() != 1 {
		t.Errorf("%d sandboxes asked for, want only Acquire's one", net.creates.Load())
	}
}

// TestAcquireRefusesUnallowed is the manager-level check of Config.Allow:
// a name it refuses is refused by Acquire (ErrNotAllowed, before any
// sandbox is asked for) and by Allowed, and is not recorded, while an
// allowed one gets through to the network.
func TestAcquireRefusesUnallowed(t *testing.T) {
	listed := map[string]bool{"main": true, "feature-x": true}
	tmpl := &lifecycle.Template{Name: "all", Match: "*", Command: []string{"true"}, Port: 3000}
	if err := tmpl.Prepare(); err != nil {
		t.Fatal(err)
	}
	net := &refusingNetwork{}
	m, err := lifecycle.New(lifecycle.Config{
		Templates: []*lifecycle.Template{tmpl},
		DataRoot:  t.TempDir(),
		Network:   net,
		Launcher:  &lifecycletest.RefusingLauncher{},
		Allow: func(name string) error {
			if !listed[name] {
				return errors.New("not in the list")
			}
			return nil
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

	if _, err := m.Acquire(ctx, "feature-y"); !errors.Is(err, lifecycle.ErrNotAllowed) {
		t.Fatalf("Acquire of an unlisted env: %v, want ErrNotAllowed", err)
	}
	if err := m.Allowed("feature-y"); !errors.Is(err, lifecycle.ErrNotAllowed) {
		t.Errorf("Allowed of an unlisted env: %v, want ErrNotAllowed", err)
	}
	if n := net.creates.Load(); n != 0 {
		t.Fatalf("%d sandboxes asked for an unlisted env", n)
	}
	if err := m.Allowed("main"); err != nil {
		t.Errorf("Allowed of a listed env: %v", err)
	}
	if _, err := m.Acquire(ctx, "main"); !errors.Is(err, errNoSandbox) {
		t.Errorf("Acquire of a listed env: %v, want it to reach the network", err)
	}
	if len(m.List()) != 1 {
		t.Errorf("refused env recorded: %+v", m.List())
	}
}
