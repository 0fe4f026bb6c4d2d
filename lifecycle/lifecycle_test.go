package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/netns/netnstest/wait"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/envgate/envgate/netns"
)

func TestMain(m *testing.M) {
	if devserver.IsTrampoline() {
		devserver.RunTrampoline()
	}
	lifecycletest.RunDemoIfChild()
	os.Exit(m.Run())
}

type fixture = lifecycletest.Fixture

// Helpers shared with devserver's tests.
var (
	acquire    = lifecycletest.Acquire
	getPage    = lifecycletest.GetPage
	zombie     = lifecycletest.Zombie
	stateOf    = lifecycletest.StateOf
	wantStates = lifecycletest.WantStates
	waitState  = lifecycletest.WaitState
)

// newFixture runs a Manager on cfg over real namespaces and dev servers
// (lifecycletest.NewFixture), with the launcher configured by ds if given.
func newFixture(t testing.TB, cfg lifecycle.Config, ds ...devserver.Config) *fixture {
	t.Helper()
	var dc devserver.Config
	if len(ds) > 0 {
		dc = ds[0]
	}
	return lifecycletest.NewFixture(t, cfg, dc)
}

func TestAcquireStartsEnvInItsOwnNamespace(t *testing.T) {
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{})}})
	l := acquire(t, f.M, "feature-x")
	defer l.Release()
	if l.Cold <= 0 {
		t.Errorf("first acquire reported Cold = %v, want > 0", l.Cold)
	}
	p := getPage(t, l)
	if p.Env != "feature-x" || p.Visits != 1 {
		t.Fatalf("page = %+v, want env feature-x, 1 visit", p)
	}
	theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", p.PID))
	if err != nil {
		t.Fatal(err)
	}
	ours, _ := os.Readlink("/proc/self/ns/net")
	if theirs == ours {
		t.Fatalf("dev server shares the gateway's namespace %s", ours)
	}
	l2 := acquire(t, f.M, "feature-x")
	defer l2.Release()
	if l2.Cold != 0 || l2.Addr != l.Addr {
		t.Fatalf("second acquire: cold %v addr %v, want warm at %v", l2.Cold, l2.Addr, l.Addr)
	}
}

func TestConcurrentFirstAcquiresShareOneStart(t *testing.T) {
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{BootDelay: 200 * time.Millisecond})}})
	const n = 200
	var wg sync.WaitGroup
	leases := make([]*lifecycle.Lease, n)
	errs := make([]error, n)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range n {
		wg.Go(func() { leases[i], errs[i] = f.M.Acquire(ctx, "herd") })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("acquire %d: %v", i, errs[i])
		}
		if leases[i].Addr != leases[0].Addr {
			t.Fatalf("lease %d at %v, lease 0 at %v", i, leases[i].Addr, leases[0].Addr)
		}
		leases[i].Release()
	}
	if c := f.Net.Creates.Load(); c != 1 {
		t.Fatalf("%d sandboxes created for one env, want 1", c)
	}
	pids, err := netns.PidsIn(filepath.Join(netns.RunDir, f.NSM.Prefix()+"-herd"))
	if err != nil || len(pids) != 1 {
		t.Fatalf("processes in the namespace: %v (%v), want exactly one dev server", pids, err)
	}
}

func TestStartFailures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		tmpl     *lifecycle.Template
		timeout  bool
		reason   string
		tailHas  string
		maxTotal time.Duration
	}{
		{
			name:    "exits at once",
			tmpl:    lifecycletest.Shell(`echo "boom: missing config" >&2; exit 3`, 10*time.Second),
			reason:  "exit status 3",
			tailHas: "boom: missing config",
		},
		{
			name:    "never listens",
			tmpl:    lifecycletest.Shell(`echo "thinking..."; exec sleep 1000`, 1500*time.Millisecond),
			timeout: true,
			reason:  "not ready within 1.5s",
			tailHas: "thinking...",
		},
		{
			name:    "wrong port",
			tmpl:    withTimeout(lifecycletest.Demo(lifecycletest.DemoOptions{ListenPort: 3001}), 1500*time.Millisecond),
			timeout: true,
			reason:  "port 3000",
			tailHas: "listening on [::]:3001",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := lifecycletest.Demo(lifecycletest.DemoOptions{})
			good.Name, good.Match = "good", "good-*"
			good.Prepare()
			tc.tmpl.Match = "bad-*"
			tc.tmpl.Prepare()
			f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{good, tc.tmpl}})
			ok := acquire(t, f.M, "good-one")
			defer ok.Release()

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := f.M.Acquire(ctx, "bad-one")
			var se *lifecycle.StartError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want *StartError", err)
			}
			if se.Timeout != tc.timeout || !strings.Contains(se.Reason, tc.reason) {
				t.Fatalf("StartError{Timeout:%v Reason:%q}, want timeout=%v reason containing %q", se.Timeout, se.Reason, tc.timeout, tc.reason)
			}
			if !strings.Contains(strings.Join(se.Tail, "\n"), tc.tailHas) {
				t.Fatalf("tail %q lacks %q", se.Tail, tc.tailHas)
			}
			// The failed env left nothing running, and the good one still answers.
			if ids, _ := f.NSM.List(); len(ids) != 1 || ids[0] != "good-one" {
				t.Fatalf("namespaces after failure: %v, want only good-one", ids)
			}
			if p := getPage(t, ok); p.Env != "good-one" {
				t.Fatalf("good env answered %+v", p)
			}
			// An env that never became ready keeps no data dir; one whose
			// data dir was there before its failed start keeps it whole.
			if _, err := os.Stat(filepath.Join(f.DataDir, "bad-one")); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("data dir of bad-one after its failed start: %v, want it removed", err)
			}
			if _, err := os.Stat(filepath.Join(f.DataDir, "good-one")); err != nil {
				t.Fatalf("data dir of the ready env: %v", err)
			}
			kept := filepath.Join(f.DataDir, "bad-two", "keep.txt")
			if err := os.MkdirAll(filepath.Dir(kept), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(kept, []byte("data"), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := f.M.Acquire(ctx, "bad-two"); err == nil {
				t.Fatal("bad-two started")
			}
			if b, err := os.ReadFile(kept); err != nil || string(b) != "data" {
				t.Fatalf("data dir that existed before the failed start: %q, %v", b, err)
			}
		})
	}
}

func withTimeout(t *lifecycle.Template, d time.Duration) *lifecycle.Template {
	t.Ready.Timeout = d
	if err := t.Prepare(); err != nil {
		panic(err)
	}
	return t
}

func TestIdleReapKeepsDataDir(t *testing.T) {
	f := newFixture(t, lifecycle.Config{
		Templates:    []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{Idle: 300 * time.Millisecond})},
		ReapInterval: 50 * time.Millisecond,
	})
	l := acquire(t, f.M, "sleepy")
	if p := getPage(t, l); p.Visits != 1 {
		t.Fatalf("visits = %d, want 1", p.Visits)
	}
	l.Release()
	waitState(t, f.M, "sleepy", lifecycle.Stopped, 20*time.Second)
	if ids, _ := f.NSM.List(); len(ids) != 0 {
		t.Fatalf("namespaces after reap: %v", ids)
	}
	if _, err := os.Stat(filepath.Join(f.DataDir, "sleepy", "visits")); err != nil {
		t.Fatalf("data dir lost by reap: %v", err)
	}
	l = acquire(t, f.M, "sleepy")
	defer l.Release()
	if p := getPage(t, l); p.Visits != 2 {
		t.Fatalf("visits after restart = %d, want 2 (counter kept in data dir)", p.Visits)
	}
}

func TestBusyEnvIsNotReaped(t *testing.T) {
	f := newFixture(t, lifecycle.Config{
		Templates:    []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{Idle: 100 * time.Millisecond})},
		ReapInterval: 20 * time.Millisecond,
	})
	l := acquire(t, f.M, "busy")
	defer l.Release()
	time.Sleep(600 * time.Millisecond) // many reaper passes
	if s := stateOf(f.M, "busy"); s != lifecycle.Ready {
		t.Fatalf("env with a lease held is %v, want ready", s)
	}
	getPage(t, l)
}

// TestLeaseDialsInsideEnv: a lease's DialContext connects from inside the
// env's network namespace: the dev server sees the connection come from
// the env's own address.
func TestLeaseDialsInsideEnv(t *testing.T) {
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{})}})
	l := acquire(t, f.M, "inside")
	defer l.Release()
	c, err := l.DialContext(context.Background(), &net.Dialer{Timeout: 5 * time.Second}, "tcp", l.Addr.String())
	if err != nil {
		t.Fatalf("dial %v through the lease: %v", l.Addr, err)
	}
	defer c.Close()
	if from := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); from != l.Addr.Addr() {
		t.Errorf("the lease's connection comes from %v, not from inside the env (%v)", from, l.Addr.Addr())
	}
}

// TestCrashedEnvRestartsOnNextAcquire: a dev server that exits on its own
// leaves its env Failed, BeforeStop called for it (the gateway's
// connections to it are dead), and the next Acquire starts it anew.
func TestCrashedEnvRestartsOnNextAcquire(t *testing.T) {
	var mu sync.Mutex
	var stops []string
	f := newFixture(t, lifecycle.Config{
		Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{})},
		BeforeStop: func(env string, addr netip.AddrPort) {
			mu.Lock()
			stops = append(stops, env+" "+addr.String())
			mu.Unlock()
		},
	})
	l := acquire(t, f.M, "crashy")
	pid := getPage(t, l).PID
	addr := l.Addr
	l.Release()
	syscall.Kill(pid, syscall.SIGKILL)
	waitState(t, f.M, "crashy", lifecycle.Failed, 20*time.Second)
	mu.Lock()
	if want := "crashy " + addr.String(); !slices.Contains(stops, want) {
		t.Errorf("BeforeStop calls %q, want %q among them", stops, want)
	}
	mu.Unlock()
	l = acquire(t, f.M, "crashy")
	defer l.Release()
	if p := getPage(t, l); p.PID == pid {
		t.Fatal("still the old process")
	}
}

func TestStopKillsWholeTree(t *testing.T) {
	script := `sleep 1000 & setsid sleep 1000 & trap "" TERM; exec "$DEMO"`
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{lifecycletest.Shell(script, 20*time.Second)}})
	l := acquire(t, f.M, "tree")
	path := filepath.Join(netns.RunDir, f.NSM.Prefix()+"-tree")
	pids, err := netns.PidsIn(path)
	if err != nil || len(pids) < 3 {
		t.Fatalf("processes in env: %v %v, want the server and two sleeps", pids, err)
	}
	l.Release()
	if !f.M.Stop("tree", "test") {
		t.Fatal("Stop found nothing to stop")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil && !zombie(pid) {
			t.Errorf("process %d survived stop", pid)
		}
	}
}

func TestCloseAbortsSlowStart(t *testing.T) {
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{BootDelay: time.Hour, Timeout: time.Hour})}})
	errc := make(chan error, 1)
	go func() {
		_, err := f.M.Acquire(context.Background(), "forever")
		errc <- err
	}()
	waitState(t, f.M, "forever", lifecycle.Starting, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.M.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := <-errc; err == nil {
		t.Fatal("acquire of an env aborted by close succeeded")
	}
	if _, err := f.M.Acquire(context.Background(), "late"); !errors.Is(err, lifecycle.ErrClosed) {
		t.Fatalf("acquire after close: %v, want ErrClosed", err)
	}
}

func TestWaiterLeavesOnItsOwnContext(t *testing.T) {
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{BootDelay: 500 * time.Millisecond})}})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := f.M.Acquire(ctx, "patient"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the caller's deadline", err)
	}
	// The start went on without the caller.
	l := acquire(t, f.M, "patient")
	l.Release()
	if c := f.Net.Creates.Load(); c != 1 {
		t.Fatalf("%d starts, want 1: the abandoned start must carry on", c)
	}
}

// Names come from the outside: entries of envs that are not running and
// saw no activity for their idle timeout are dropped, and asking about an
// env makes no entry, so that ever new names cannot grow the manager.
func TestStaleEntriesAreForgotten(t *testing.T) {
	f := newFixture(t, lifecycle.Config{
		Templates:    []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{Idle: 200 * time.Millisecond})},
		ReapInterval: 20 * time.Millisecond,
	})
	for i := range 50 {
		if _, err := f.M.Progress(fmt.Sprintf("asked-%d", i), 5); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(f.M.List()); n != 0 {
		t.Fatalf("Progress made %d entries, want none", n)
	}
	l := acquire(t, f.M, "transient")
	if p := getPage(t, l); p.Visits != 1 {
		t.Fatalf("visits %d", p.Visits)
	}
	l.Release()
	wait.For(t, 20*time.Second, "the reaped env's entry to be dropped", func() bool { return len(f.M.List()) == 0 })
	l = acquire(t, f.M, "transient")
	defer l.Release()
	if p := getPage(t, l); p.Visits != 2 {
		t.Fatalf("visits after the entry was dropped = %d, want 2 (data dir kept)", p.Visits)
	}
}
