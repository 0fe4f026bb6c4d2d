package devserver_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
)

func TestMain(m *testing.M) {
	lifecycletest.PoolBlock = 8 // as poolBlock: lifecycle's tests, beside these, have 1
	// Dev servers that need the trampoline start as this test binary
	// (no envgate-init beside it) unless a test names one.
	if devserver.IsTrampoline() {
		devserver.RunTrampoline()
	}
	if os.Getenv(probeVar) != "" {
		probeServer()
	}
	lifecycletest.RunDemoIfChild()
	os.Exit(m.Run())
}

type fixture = lifecycletest.Fixture

// newFixture runs a Manager on cfg over real namespaces, with dev servers
// launched as ds says.
func newFixture(t testing.TB, cfg lifecycle.Config, ds devserver.Config) *fixture {
	t.Helper()
	return lifecycletest.NewFixture(t, cfg, ds)
}

// benchFixture is newFixture for benchmarks whose bursts all wait their
// turn (see lifecycle's benchFixture).
func benchFixture(b *testing.B, cfg lifecycle.Config, ds devserver.Config) *fixture {
	b.Helper()
	if cfg.Limits.MaxQueuedStarts == 0 {
		cfg.Limits.MaxQueuedStarts = 1000
	}
	return newFixture(b, cfg, ds)
}

// Helpers shared with lifecycle's tests.
var (
	acquire      = lifecycletest.Acquire
	getPage      = lifecycletest.GetPage
	zombie       = lifecycletest.Zombie
	stateOf      = lifecycletest.StateOf
	waitState    = lifecycletest.WaitState
	cgroupParent = lifecycletest.CgroupParent
	cgFile       = lifecycletest.CgroupFile
)

// buildInit builds cmd/envgate-init into a directory of the test's own,
// which only root may enter (0700), and returns its path.
func buildInit(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "envgate-init-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	out := filepath.Join(dir, devserver.InitName)
	cmd := exec.Command("go", "build", "-o", out, "../../cmd/envgate-init")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build envgate-init: %v\n%s", err, b)
	}
	return out
}
