package devserver_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
// which only root may enter (0700), and returns its path. It is built as
// go build does by default: with its C fast path when cgo works here.
func buildInit(t testing.TB) string {
	t.Helper()
	return buildInitCgo(t, "")
}

// buildInitCgo is buildInit with CGO_ENABLED=cgo ("" for go build's
// default): "1" for the C fast path (fastpath.c), "0" for the Go path
// alone.
func buildInitCgo(t testing.TB, cgo string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "envgate-init-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	out := filepath.Join(dir, devserver.InitName)
	cmd := exec.Command("go", "build", "-o", out, "../../cmd/envgate-init")
	if cgo != "" {
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build envgate-init (CGO_ENABLED=%q): %v\n%s", cgo, err, b)
	}
	return out
}

// initVariants are the trampolines an isolated env's tests run with: the
// test binary (a gateway without envgate-init beside it), envgate-init
// without cgo (its Go path) and, where a C compiler is, envgate-init's C
// fast path. fast says whether a variant's init must be the C one.
type initVariant struct {
	name string
	path func(testing.TB) string // "": the test binary
	fast bool
}

var initVariants = []initVariant{
	{"test-binary", func(testing.TB) string { return "" }, false},
	{"envgate-init-go", func(t testing.TB) string { return buildInitCgo(t, "0") }, false},
	{"envgate-init-c", func(t testing.TB) string {
		cc, err := exec.LookPath(goEnv(t, "CC"))
		if err != nil {
			t.Skipf("no C compiler (%v): envgate-init has no C fast path here", err)
		}
		// It is linked statically (cmd/envgate-init/fastpath.go).
		if b, _ := exec.Command(cc, "-print-file-name=libc.a").Output(); !strings.Contains(string(b), "/") {
			t.Skip("no static libc (libc6-dev): envgate-init has no C fast path here")
		}
		return buildInitCgo(t, "1")
	}, true},
}

// goEnv is `go env NAME`.
func goEnv(t testing.TB, name string) string {
	t.Helper()
	b, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", name, err)
	}
	return strings.TrimSpace(string(b))
}
