package lifecycle_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/netns/netnstest/wait"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
	"github.com/rs/zerolog"
)

// abandon makes f's manager let go of its envs as a crashed gateway
// would: processes and sandboxes stay, the manager forgets them and its
// ends of their pipes are closed.
func abandon(t *testing.T, f *fixture) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	handed, err := f.M.Handoff(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range handed {
		h.Output.Close()
		h.PidFD.Close()
	}
}

// successor is the next gateway process: a new manager, on a new
// netns.Manager of the same instance, reading the same state file.
func successor(t *testing.T, f *fixture, stateFile string) (*lifecycle.Manager, *lifecycletest.CountingNetwork) {
	t.Helper()
	nsm, err := netns.New(netns.Config{Prefix: f.NSM.Prefix(), Pool: netnstest.Pool(lifecycletest.PoolBlock)})
	if err != nil {
		t.Fatal(err)
	}
	cn := &lifecycletest.CountingNetwork{NetnsNetwork: lifecycle.NetnsNetwork{M: nsm}}
	m, err := lifecycle.New(lifecycle.Config{
		Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{})},
		DataRoot:  f.DataDir,
		Network:   cn,
		Launcher:  lifecycletest.Launcher(t, devserver.Config{DataRoot: f.DataDir}),
		StateFile: stateFile,
		Log:       zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		m.Close(ctx)
	})
	return m, cn
}

func TestRecoverAdoptsLiveEnvsWithoutStartingThem(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "state.json")
	f := newFixture(t, lifecycle.Config{
		Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{})},
		StateFile: stateFile,
	})
	names := []string{"keep-a", "keep-b", "keep-c"}
	pids := map[string]int{}
	for _, n := range names {
		l := acquire(t, f.M, n)
		pids[n] = getPage(t, l).PID
		l.Release()
	}
	abandon(t, f)

	m2, cn := successor(t, f, stateFile)
	adopted, err := m2.Recover(true)
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	slices.Sort(adopted)
	if !slices.Equal(adopted, names) {
		t.Fatalf("adopted %v, want %v", adopted, names)
	}
	for _, n := range names {
		l := acquire(t, m2, n)
		p := getPage(t, l)
		l.Release()
		if l.Cold != 0 || p.PID != pids[n] || p.Visits != 2 {
			t.Errorf("%s after adoption: cold %v, pid %d (was %d), visits %d; want warm, same pid, 2 visits", n, l.Cold, p.PID, pids[n], p.Visits)
		}
	}
	if c := cn.Creates.Load(); c != 0 {
		t.Fatalf("the successor created %d sandboxes, want 0", c)
	}
	var st struct {
		Envs []struct {
			Name string `json:"name"`
			Pid  int    `json:"pid"`
		} `json:"envs"`
	}
	b, _ := os.ReadFile(stateFile)
	if err := json.Unmarshal(b, &st); err != nil || len(st.Envs) != 3 {
		t.Fatalf("state file after adoption: %s (%v), want 3 envs", b, err)
	}
	// An adopted env is supervised like any: a crash is seen.
	syscall.Kill(pids["keep-a"], syscall.SIGKILL)
	waitState(t, m2, "keep-a", lifecycle.Failed, 20*time.Second)
}

func TestRecoverCleanKillsRecordedEnvs(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "state.json")
	f := newFixture(t, lifecycle.Config{
		Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{})},
		StateFile: stateFile,
	})
	var pids []int
	for _, n := range []string{"gone-a", "gone-b"} {
		l := acquire(t, f.M, n)
		pids = append(pids, getPage(t, l).PID)
		l.Release()
	}
	abandon(t, f)
	m2, _ := successor(t, f, stateFile)
	adopted, err := m2.Recover(false)
	if err != nil || len(adopted) != 0 {
		t.Fatalf("recover clean: adopted %v, %v; want nothing", adopted, err)
	}
	for _, pid := range pids {
		wait.For(t, 10*time.Second, fmt.Sprintf("dev server %d to go (on_restart clean)", pid), func() bool {
			return syscall.Kill(pid, 0) != nil || zombie(pid)
		})
	}
	// What is left are sandboxes, which the caller's GC removes.
	if _, err := f.NSM.GC(nil); err != nil {
		t.Fatal(err)
	}
}
