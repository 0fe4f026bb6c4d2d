package lifecycle_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/envgate/envgate/netns/netnstest/wait"
)

// dirCheckouts gives every env the same directory at a fixed commit.
type dirCheckouts struct{ dir, commit string }

func (c dirCheckouts) Checkout(context.Context, string, int, int) (string, string, error) {
	return c.dir, c.commit, nil
}

// TestPrepareTimeout: prepare steps have their own timeout, apart from
// the ready timeout. A step that outlasts the ready timeout but not the
// prepare timeout lets the env start (and Progress says which commit is
// being prepared meanwhile); a step that outlasts the prepare timeout is
// stopped and fails the start as a timeout that names prepare_timeout.
func TestPrepareTimeout(t *testing.T) {
	const readyTimeout = 3 * time.Second
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const commit = "0123456789abcdef0123456789abcdef01234567"
	patient := lifecycletest.Demo(lifecycletest.DemoOptions{Timeout: readyTimeout})
	patient.Name, patient.Match = "patient", "patient"
	// Waits for the test's word: the file "go" in the checkout.
	patient.PrepareSteps = [][]string{{"sh", "-c", "while [ ! -f go ]; do sleep 0.02; done"}}
	patient.PrepareTimeout = time.Minute
	hasty := lifecycletest.Demo(lifecycletest.DemoOptions{Timeout: time.Minute})
	hasty.Name, hasty.Match = "hasty", "hasty"
	hasty.PrepareSteps = [][]string{{"sh", "-c", "echo building; exec sleep 60"}}
	hasty.PrepareTimeout = 500 * time.Millisecond
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{patient, hasty}},
		devserver.Config{Checkouts: dirCheckouts{dir: dir, commit: commit}})

	started := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		l, err := f.M.Acquire(ctx, "patient")
		if err == nil {
			l.Release()
		}
		started <- err
	}()
	wait.For(t, 30*time.Second, "Progress to say the env is updating to the commit", func() bool {
		p, err := f.M.Progress("patient", 0)
		return err == nil && p.State == lifecycle.Starting && p.Updating == commit
	})
	// The step outlasts the ready timeout: that is what is tested here.
	<-time.After(readyTimeout + 500*time.Millisecond)
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-started; err != nil {
		t.Fatalf("a prepare step longer than the ready timeout (within the prepare timeout) failed the start: %v", err)
	}
	if p, _ := f.M.Progress("patient", 0); p.Updating != "" {
		t.Errorf("Progress.Updating %q after the start, want empty", p.Updating)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	began := time.Now()
	_, err := f.M.Acquire(ctx, "hasty")
	var se *lifecycle.StartError
	if !errors.As(err, &se) {
		t.Fatalf("hasty: %v, want a StartError", err)
	}
	if !se.Timeout || !strings.Contains(se.Reason, "prepare_timeout") || !strings.Contains(se.Reason, "echo building") {
		t.Errorf("hasty: timeout %v, reason %q: want a timeout naming the step and prepare_timeout", se.Timeout, se.Reason)
	}
	if took := time.Since(began); took > 20*time.Second {
		t.Errorf("hasty failed after %v: the step was not stopped at its prepare timeout", took)
	}
	if !strings.Contains(strings.Join(se.Tail, "\n"), "building") {
		t.Errorf("hasty: output tail %q lacks the step's output", se.Tail)
	}
}
