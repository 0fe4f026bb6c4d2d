package lifecycletest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/netns/netnstest/wait"
)

// Acquire acquires env name within 30s or fails the test.
func Acquire(t testing.TB, m *lifecycle.Manager, name string) *lifecycle.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := m.Acquire(ctx, name)
	if err != nil {
		t.Fatalf("acquire %s: %v", name, err)
	}
	return l
}

// Page is what the demo dev server answers to a JSON request.
type Page struct {
	Env    string `json:"env"`
	Visits int    `json:"visits"`
	PID    int    `json:"pid"`
}

// GetPage fetches the demo's page from the leased env.
func GetPage(t testing.TB, l *lifecycle.Lease) Page {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+l.Addr.String()+"/", nil)
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", l.Addr, err)
	}
	defer resp.Body.Close()
	var p Page
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatalf("decode page: %v", err)
	}
	return p
}

// Zombie reports whether pid is gone or a zombie.
func Zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// StateOf is env name's state in m's listing (Stopped when not listed).
func StateOf(m *lifecycle.Manager, name string) lifecycle.State {
	for _, in := range m.List() {
		if in.Name == name {
			return in.State
		}
	}
	return lifecycle.Stopped
}

// WantStates reports (t.Errorf) each env of names whose state in m is
// not want.
func WantStates(t testing.TB, m *lifecycle.Manager, want lifecycle.State, names ...string) {
	t.Helper()
	for _, n := range names {
		if s := StateOf(m, n); s != want {
			t.Errorf("%s is %v, want %v", n, s, want)
		}
	}
}

// WaitState polls until env name is in state want, or fails the test
// after limit.
func WaitState(t testing.TB, m *lifecycle.Manager, name string, want lifecycle.State, limit time.Duration) {
	t.Helper()
	wait.For(t, limit, fmt.Sprintf("env %s to be %v", name, want), func() bool { return StateOf(m, name) == want })
}

// FakeMemory reports 10 GiB available minus 3 GiB per sandbox of the
// fixture f will hold (none until it does): the manager's loops call it
// from the start, before NewFixture has returned.
func FakeMemory(f *atomic.Pointer[Fixture]) func() (int64, error) {
	return func() (int64, error) {
		fx := f.Load()
		if fx == nil {
			return 10 << 30, nil
		}
		// Counted by namespace: a sandbox's addresses go back to the
		// pool only once the kernel has removed its veth, a moment after
		// its dev server (and the memory it held) is gone.
		ids, err := fx.NSM.List()
		return 10<<30 - 3<<30*int64(len(ids)), err
	}
}

// CgroupParent returns a cgroup parent of the test's own and checks that
// it is empty, and removes it, when the test ends.
func CgroupParent(t testing.TB) string {
	t.Helper()
	parent := fmt.Sprintf("envgate-test/%d-%s", os.Getpid(), strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())))
	t.Cleanup(func() {
		for _, dir := range []string{CgroupFile(parent, "memory", ""), CgroupFile(parent, "pids", ""), CgroupFile(parent, "cpu", "")} {
			if err := os.Remove(dir); err != nil && !os.IsNotExist(err) {
				t.Errorf("cgroup parent %s not empty after the test: %v", dir, err)
			}
			os.Remove(filepath.Dir(dir)) // envgate-test, if no other test uses it
		}
	})
	return parent
}

// CgroupFile is a file of cgroup path p: v1 controller ctrl's, or v2's.
func CgroupFile(p, ctrl, file string) string {
	if cgroups.Mode() == cgroups.Unified {
		return filepath.Join("/sys/fs/cgroup", p, file)
	}
	return filepath.Join("/sys/fs/cgroup", ctrl, p, file)
}

// Percentile returns the p-th percentile (0-100) of sorted ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[min(len(ds)-1, int(float64(len(ds))*p/100))]
}
