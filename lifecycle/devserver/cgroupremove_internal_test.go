package devserver

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/netns/netnstest"
)

// cgroupDirs lists the directories of env cgroup p, one per hierarchy.
func cgroupDirs(t testing.TB, p string) []string {
	t.Helper()
	if cgroups.Mode() == cgroups.Unified {
		return []string{filepath.Join(cgroupMount, p)}
	}
	subs, err := v1Hierarchy()
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, s := range subs {
		dirs = append(dirs, filepath.Join(cgroupMount, string(s.Name()), p))
	}
	return dirs
}

// testCgroupParent is a cgroup parent for one test, removed after it.
func testCgroupParent(t testing.TB) string {
	parent := fmt.Sprintf("envgate-test/remove-%d", os.Getpid())
	t.Cleanup(func() {
		for _, c := range []string{"memory", "cpu", "pids", ""} {
			os.Remove(filepath.Join(cgroupMount, c, parent))
			os.Remove(filepath.Join(cgroupMount, c, "envgate-test"))
		}
	})
	return parent
}

// TestCgroupRemove: an empty cgroup goes (the one-rmdir way), and so does
// one that still holds a process, which remove kills first (the long way).
func TestCgroupRemove(t *testing.T) {
	netnstest.RequireRoot(t)
	parent := testCgroupParent(t)
	empty, err := newCgroup(parent, "empty", lifecycle.Resources{})
	if err != nil {
		t.Fatal(err)
	}
	busy, err := newCgroup(parent, "busy", lifecycle.Resources{Pids: 16})
	if err != nil {
		empty.remove()
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		empty.remove()
		busy.remove()
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	for _, d := range cgroupDirs(t, busy.path()) {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
			empty.remove()
			busy.remove()
			t.Fatalf("move sleep into %s: %v", d, err)
		}
	}

	if err := empty.remove(); err != nil {
		t.Errorf("remove an empty cgroup: %v", err)
	}
	// The long way waits until the cgroup is empty, which needs the killed
	// sleep reaped: the goroutine above does that.
	if err := busy.remove(); err != nil {
		t.Errorf("remove a cgroup with a process in it: %v", err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Error("the process in the removed cgroup still runs 10 s later")
	}
	for _, cg := range []envCgroup{empty, busy} {
		for _, d := range cgroupDirs(t, cg.path()) {
			if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s is left after remove (stat: %v)", d, err)
			}
		}
	}
}

// BenchmarkCgroupRemove500 removes 500 empty env cgroups, 16 at a time,
// as a shutdown releases its stopped envs: with remove's one rmdir per
// hierarchy, and with the long way it falls back to (kill and the
// library's Delete, which walk every cgroup's files).
func BenchmarkCgroupRemove500(b *testing.B) {
	netnstest.RequireRoot(b)
	parent := testCgroupParent(b)
	for _, way := range []string{"rmdir", "walk"} {
		b.Run(way, func(b *testing.B) {
			var took time.Duration
			for i := range b.N {
				cgs := make([]envCgroup, 500)
				for j := range cgs {
					cg, err := newCgroup(parent, fmt.Sprintf("%s%d-%d", way, i, j), lifecycle.Resources{})
					if err != nil {
						for _, c := range cgs[:j] {
							c.remove()
						}
						b.Fatal(err)
					}
					cgs[j] = cg
				}
				began := time.Now()
				var wg sync.WaitGroup
				next := make(chan envCgroup)
				errs := make(chan error, len(cgs))
				for range 16 {
					wg.Go(func() {
						for cg := range next {
							errs <- removeWay(cg, way)
						}
					})
				}
				for _, cg := range cgs {
					next <- cg
				}
				close(next)
				wg.Wait()
				took += time.Since(began)
				close(errs)
				for err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(took.Seconds()*1000/float64(b.N), "ms-remove-500")
		})
	}
}

// removeWay removes cg the way named: remove itself, or the long way.
func removeWay(cg envCgroup, way string) error {
	if way == "rmdir" {
		return cg.remove()
	}
	switch c := cg.(type) {
	case *cgroupV1:
		return errors.Join(c.kill(), c.cg.Delete())
	case *cgroupV2:
		return errors.Join(c.kill(), c.m.Delete())
	}
	return fmt.Errorf("cgroup of type %T", cg)
}
