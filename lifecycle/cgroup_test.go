package lifecycle_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/envgate/envgate/netns"
)

// cgroupParent returns a cgroup parent of the test's own and removes it
// (it must be empty by then) when the test ends.
func cgroupParent(t *testing.T) string {
	t.Helper()
	parent := fmt.Sprintf("envgate-test/%d-%s", os.Getpid(), strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())))
	t.Cleanup(func() {
		for _, dir := range []string{cgFile(parent, "memory", ""), cgFile(parent, "pids", ""), cgFile(parent, "cpu", "")} {
			if err := os.Remove(dir); err != nil && !os.IsNotExist(err) {
				t.Errorf("cgroup parent %s not empty after the test: %v", dir, err)
			}
			os.Remove(filepath.Dir(dir)) // envgate-test, if no other test uses it
		}
	})
	return parent
}

// cgFile is a file of cgroup path p: v1 controller ctrl's, or v2's.
func cgFile(p, ctrl, file string) string {
	if cgroups.Mode() == cgroups.Unified {
		return filepath.Join("/sys/fs/cgroup", p, file)
	}
	return filepath.Join("/sys/fs/cgroup", ctrl, p, file)
}

func readCg(t *testing.T, p, ctrl, file string) string {
	t.Helper()
	b, err := os.ReadFile(cgFile(p, ctrl, file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// statField returns the number after key in a "key value" lines file.
func statField(s, key string) int64 {
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == key {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

func pidsNamed(t *testing.T, f *fixture, env, comm string) []int {
	t.Helper()
	pids, _ := netns.PidsIn(filepath.Join(netns.RunDir, f.nsm.Prefix()+"-"+env))
	var out []int
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err == nil && strings.TrimSpace(string(b)) == comm && !zombie(pid) {
			out = append(out, pid)
		}
	}
	return out
}

func TestMemoryLimitConfinesOOMToTheEnv(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("needs /usr/bin/python3 to allocate memory")
	}
	hog := lifecycletest.Shell(`(/usr/bin/python3 -c 'import time; x = b"\x01" * (1 << 30); time.sleep(1000)' &); exec "$DEMO"`, 20*time.Second)
	hog.Name, hog.Match = "hog", "hog-*"
	hog.Resources = lifecycle.Resources{Memory: 256 << 20, CPUs: 1, Pids: 256}
	ok := lifecycletest.Demo(lifecycletest.DemoOptions{})
	for _, tp := range []*lifecycle.Template{hog, ok} {
		if err := tp.Prepare(); err != nil {
			t.Fatal(err)
		}
	}
	parent := cgroupParent(t)
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{hog, ok}, CgroupParent: parent})
	good := acquire(t, f.m, "calm")
	defer good.Release()
	l := acquire(t, f.m, "hog-one")
	defer l.Release()
	cg := parent + "/hog-one"
	if lim := readCg(t, cg, "memory", map[bool]string{true: "memory.max", false: "memory.limit_in_bytes"}[cgroups.Mode() == cgroups.Unified]); lim != strconv.Itoa(256<<20) {
		t.Fatalf("memory limit %s, want %d", lim, 256<<20)
	}
	// The allocation overshoots the limit: the kernel kills it, inside
	// the env's cgroup, and nothing else.
	deadline := time.Now().Add(30 * time.Second)
	events := map[bool]string{true: "memory.events", false: "memory.oom_control"}[cgroups.Mode() == cgroups.Unified]
	for statField(readCg(t, cg, "memory", events), "oom_kill") < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no OOM kill in the hog's cgroup after 30s (%s)", readCg(t, cg, "memory", events))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for len(pidsNamed(t, f, "hog-one", "python3")) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the memory hog survived its OOM kill")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p := getPage(t, good); p.Env != "calm" {
		t.Fatalf("the other env answered %+v", p)
	}
	if p := getPage(t, l); p.Env != "hog-one" {
		t.Fatalf("the hog env's dev server answered %+v after the OOM kill of its hog", p)
	}
	if s := stateOf(f.m, "calm"); s != lifecycle.Ready {
		t.Fatalf("other env is %v", s)
	}
}

func TestPidsLimitStopsForkBomb(t *testing.T) {
	const limit = 64
	// The leader is a plain sleep: the shell that forks dies at the first
	// refused fork, and the demo may die for want of a thread.
	bomb := lifecycletest.Shell(`"$DEMO" & (sleep 0.3; i=0; while [ $i -lt 300 ]; do sleep 1000 & i=$((i+1)); done) 2>/dev/null & exec sleep 100000`, 20*time.Second)
	bomb.Name, bomb.Match = "bomb", "bomb-*"
	bomb.Resources = lifecycle.Resources{Pids: limit}
	ok := lifecycletest.Demo(lifecycletest.DemoOptions{})
	for _, tp := range []*lifecycle.Template{bomb, ok} {
		if err := tp.Prepare(); err != nil {
			t.Fatal(err)
		}
	}
	parent := cgroupParent(t)
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{bomb, ok}, CgroupParent: parent})
	good := acquire(t, f.m, "calm")
	defer good.Release()
	l := acquire(t, f.m, "bomb-one")
	cg := parent + "/bomb-one"
	if max := readCg(t, cg, "pids", "pids.max"); max != strconv.Itoa(limit) {
		t.Fatalf("pids.max %s, want %d", max, limit)
	}
	deadline := time.Now().Add(30 * time.Second)
	for statField(readCg(t, cg, "pids", "pids.events"), "max") < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no fork refused after 30s: pids.current %s", readCg(t, cg, "pids", "pids.current"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if cur, _ := strconv.Atoi(readCg(t, cg, "pids", "pids.current")); cur > limit {
		t.Fatalf("pids.current %d past the limit %d", cur, limit)
	}
	if n := len(pidsNamed(t, f, "bomb-one", "sleep")); n >= 300 {
		t.Fatalf("%d sleeps forked despite the pids limit", n)
	}
	if p := getPage(t, good); p.Env != "calm" {
		t.Fatalf("the other env answered %+v", p)
	}
	pids, _ := netns.PidsIn(filepath.Join(netns.RunDir, f.nsm.Prefix()+"-bomb-one"))
	l.Release()
	if !f.m.Stop("bomb-one", "test") {
		t.Fatal("nothing to stop")
	}
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil && !zombie(pid) {
			t.Errorf("process %d survived stop", pid)
		}
	}
	if _, err := os.Stat(cgFile(cg, "pids", "")); !os.IsNotExist(err) {
		t.Fatalf("env cgroup left after stop: %v", err)
	}
}

func TestMemoryPressureEvictsLargestIdleEnvFirst(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("needs /usr/bin/python3 to allocate memory")
	}
	big := lifecycletest.Shell(`(/usr/bin/python3 -c 'import time; x = b"\x01" * (200 << 20); time.sleep(1000)' &); exec "$DEMO"`, 20*time.Second)
	big.Name, big.Match = "big", "big-*"
	small := lifecycletest.Demo(lifecycletest.DemoOptions{})
	for _, tp := range []*lifecycle.Template{big, small} {
		if err := tp.Prepare(); err != nil {
			t.Fatal(err)
		}
	}
	parent := cgroupParent(t)
	var fp atomic.Pointer[fixture]
	f := newFixture(t, lifecycle.Config{
		Templates:       []*lifecycle.Template{big, small},
		CgroupParent:    parent,
		Limits:          lifecycle.Limits{MinAvailableMemory: 5 << 30},
		AvailableMemory: fakeMemory(&fp), // below the floor with two envs
		ReapInterval:    20 * time.Millisecond,
	})
	fp.Store(f)
	hog := acquire(t, f.m, "big-one")
	calm := acquire(t, f.m, "calm")
	deadline := time.Now().Add(30 * time.Second)
	usage := map[bool]string{true: "memory.current", false: "memory.usage_in_bytes"}[cgroups.Mode() == cgroups.Unified]
	for n, _ := strconv.ParseInt(readCg(t, parent+"/big-one", "memory", usage), 10, 64); n < 150<<20; n, _ = strconv.ParseInt(readCg(t, parent+"/big-one", "memory", usage), 10, 64) {
		if time.Now().After(deadline) {
			t.Fatalf("big env uses %d bytes, want its 200MiB allocation", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// big-one is the least recently used too; make it the most recent,
	// so only its memory can make it the victim.
	calm.Release()
	hog.Release()
	waitState(t, f.m, "big-one", lifecycle.Stopped, 20*time.Second)
	if s := stateOf(f.m, "calm"); s != lifecycle.Ready {
		t.Fatalf("small env is %v, want ready: the largest goes first", s)
	}
}
