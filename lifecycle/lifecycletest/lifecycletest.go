// Package lifecycletest runs the demo dev server out of a test binary, so
// integration tests of lifecycle and gateway spawn real processes in real
// namespaces without building the envgate binary first.
//
// A test package calls RunDemoIfChild first thing in TestMain; templates
// made by Demo re-execute the test binary, which then serves the demo
// instead of running tests.
package lifecycletest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/loadtest/demo"
	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
	"github.com/rs/zerolog"
)

const childVar = "ENVGATE_TEST_DEMO"

// RunDemoIfChild serves the demo and exits when the process was started by
// a Demo template; otherwise it returns at once.
func RunDemoIfChild() {
	spec := os.Getenv(childVar)
	if spec == "" {
		return
	}
	// spec: listen|bootDelay
	listen, delay, _ := strings.Cut(spec, "|")
	d, _ := time.ParseDuration(delay)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := demo.Run(ctx, demo.Options{
		Listen:    listen,
		Name:      os.Getenv("ENVGATE_ENV"),
		DataDir:   os.Getenv("ENVGATE_DATA_DIR"),
		BootDelay: d,
		Log:       os.Stdout,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// DemoOptions tune a Demo template.
type DemoOptions struct {
	Port       int           // the template's port; default 3000
	ListenPort int           // where the demo really listens; default Port
	BootDelay  time.Duration // sleep before listening
	Timeout    time.Duration // start timeout; default 20s
	Idle       time.Duration // idle timeout; default lifecycle's
}

// Demo returns a prepared template that runs the demo dev server from the
// test binary.
func Demo(o DemoOptions) *lifecycle.Template {
	if o.Port == 0 {
		o.Port = 3000
	}
	if o.ListenPort == 0 {
		o.ListenPort = o.Port
	}
	if o.Timeout == 0 {
		o.Timeout = 20 * time.Second
	}
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	t := &lifecycle.Template{
		Name:        "demo",
		Command:     []string{exe},
		Env:         map[string]string{childVar: fmt.Sprintf(":%d|%s", o.ListenPort, o.BootDelay), "GORACE": "atexit_sleep_ms=0"},
		Port:        o.Port,
		Ready:       lifecycle.Probe{HTTPPath: "/healthz", Timeout: o.Timeout},
		IdleTimeout: o.Idle,
		StopGrace:   5 * time.Second,
	}
	if err := t.Prepare(); err != nil {
		panic(err)
	}
	return t
}

// Shell returns a prepared template running script with sh -c. The
// script can run the demo on port 3000 with `exec "$DEMO"`.
func Shell(script string, timeout time.Duration) *lifecycle.Template {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	t := &lifecycle.Template{
		Name:      "shell",
		Command:   []string{"sh", "-c", script},
		Env:       map[string]string{"DEMO": exe, childVar: ":3000|0s", "GORACE": "atexit_sleep_ms=0"},
		Port:      3000,
		Ready:     lifecycle.Probe{Timeout: timeout},
		StopGrace: 2 * time.Second,
	}
	if err := t.Prepare(); err != nil {
		panic(err)
	}
	return t
}

// CountingNetwork counts sandbox creations on top of real namespaces, so
// tests can assert how many starts a scenario caused.
type CountingNetwork struct {
	lifecycle.NetnsNetwork
	Creates atomic.Int64
}

// Create implements lifecycle.Network.
func (c *CountingNetwork) Create(ctx context.Context, name string) (lifecycle.Sandbox, error) {
	c.Creates.Add(1)
	return c.NetnsNetwork.Create(ctx, name)
}

// Launcher returns a devserver.Launcher for ds, closed when the test
// ends. It logs to the test.
func Launcher(t testing.TB, ds devserver.Config) *devserver.Launcher {
	t.Helper()
	if reflect.ValueOf(ds.Log).IsZero() {
		ds.Log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	}
	l, err := devserver.New(ds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// PoolBlock is the netnstest.Pool block of the fixtures' addresses: 1,
// lifecycle's. Test packages run in parallel processes, and each needs a
// block of its own: another package sets its own in TestMain.
var PoolBlock = 1

// Fixture is a Manager running real dev servers (devserver) in real
// network namespaces of an instance of the test's own.
type Fixture struct {
	M       *lifecycle.Manager
	Net     *CountingNetwork
	NSM     *netns.Manager
	DataDir string
}

// NewFixture runs a Manager on cfg with its Network, DataRoot and
// Launcher (from ds, whose DataRoot it sets) filled in, and its Log if
// unset; it closes it when the test ends, after which netnstest checks
// that nothing of the instance is left.
func NewFixture(t testing.TB, cfg lifecycle.Config, ds devserver.Config) *Fixture {
	t.Helper()
	nsm, err := netns.New(netns.Config{Prefix: netnstest.Prefix(t), Pool: netnstest.Pool(PoolBlock)})
	if err != nil {
		t.Fatal(err)
	}
	f := &Fixture{Net: &CountingNetwork{NetnsNetwork: lifecycle.NetnsNetwork{M: nsm}}, NSM: nsm, DataDir: t.TempDir()}
	cfg.Network = f.Net
	cfg.DataRoot = f.DataDir
	if reflect.ValueOf(cfg.Log).IsZero() {
		cfg.Log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	}
	ds.DataRoot = f.DataDir
	cfg.Launcher = Launcher(t, ds)
	f.M, err = lifecycle.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := f.M.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return f
}

// ErrNoLaunch is RefusingLauncher's error.
var ErrNoLaunch = errors.New("lifecycletest: this launcher starts nothing")

// RefusingLauncher is a lifecycle.Launcher that starts nothing, for
// managers whose tests must never get as far as a dev server.
type RefusingLauncher struct{ Launches atomic.Int64 }

// Launch implements lifecycle.Launcher: it counts the call and fails.
func (l *RefusingLauncher) Launch(context.Context, lifecycle.LaunchRequest) (lifecycle.Process, error) {
	l.Launches.Add(1)
	return nil, ErrNoLaunch
}
