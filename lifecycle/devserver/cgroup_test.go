package devserver_test

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

	"github.com/envgate/envgate/netns/netnstest/wait"

	"github.com/containerd/cgroups/v3"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/envgate/envgate/netns"
)

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
	pids, _ := netns.PidsIn(filepath.Join(netns.RunDir, f.NSM.Prefix()+"-"+env))
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
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{hog, ok}}, devserver.Config{CgroupParent: parent})
	good := acquire(t, f.M, "calm")
	defer good.Release()
	l := acquire(t, f.M, "hog-one")
	defer l.Release()
	cg := parent + "/hog-one"
	if lim := readCg(t, cg, "memory", map[bool]string{true: "memory.max", false: "memory.limit_in_bytes"}[cgroups.Mode() == cgroups.Unified]); lim != strconv.Itoa(256<<20) {
		t.Fatalf("memory limit %s, want %d", lim, 256<<20)
	}
	// The allocation overshoots the limit: the kernel kills it, inside
	// the env's cgroup, and nothing else.
	events := map[bool]string{true: "memory.events", false: "memory.oom_control"}[cgroups.Mode() == cgroups.Unified]
	wait.For(t, 30*time.Second, "an OOM kill in the hog's cgroup", func() bool {
		return statField(readCg(t, cg, "memory", events), "oom_kill") >= 1
	})
	wait.For(t, 30*time.Second, "the memory hog to die of its OOM kill", func() bool {
		return len(pidsNamed(t, f, "hog-one", "python3")) == 0
	})
	if p := getPage(t, good); p.Env != "calm" {
		t.Fatalf("the other env answered %+v", p)
	}
	if p := getPage(t, l); p.Env != "hog-one" {
		t.Fatalf("the hog env's dev server answered %+v after the OOM kill of its hog", p)
	}
	if s := stateOf(f.M, "calm"); s != lifecycle.Ready {
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
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{bomb, ok}}, devserver.Config{CgroupParent: parent})
	good := acquire(t, f.M, "calm")
	defer good.Release()
	l := acquire(t, f.M, "bomb-one")
	cg := parent + "/bomb-one"
	if max := readCg(t, cg, "pids", "pids.max"); max != strconv.Itoa(limit) {
		t.Fatalf("pids.max %s, want %d", max, limit)
	}
	wait.For(t, 30*time.Second, "a fork refused at pids.max", func() bool {
		return statField(readCg(t, cg, "pids", "pids.events"), "max") >= 1
	})
	if cur, _ := strconv.Atoi(readCg(t, cg, "pids", "pids.current")); cur > limit {
		t.Fatalf("pids.current %d past the limit %d", cur, limit)
	}
	if n := len(pidsNamed(t, f, "bomb-one", "sleep")); n >= 300 {
		t.Fatalf("%d sleeps forked despite the pids limit", n)
	}
	if p := getPage(t, good); p.Env != "calm" {
		t.Fatalf("the other env answered %+v", p)
	}
	pids, _ := netns.PidsIn(filepath.Join(netns.RunDir, f.NSM.Prefix()+"-bomb-one"))
	l.Release()
	if !f.M.Stop("bomb-one", "test") {
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
		Limits:          lifecycle.Limits{MinAvailableMemory: 5 << 30},
		AvailableMemory: lifecycletest.FakeMemory(&fp), // below the floor with two envs
		ReapInterval:    20 * time.Millisecond,
	}, devserver.Config{CgroupParent: parent})
	fp.Store(f)
	hog := acquire(t, f.M, "big-one")
	calm := acquire(t, f.M, "calm")
	usage := map[bool]string{true: "memory.current", false: "memory.usage_in_bytes"}[cgroups.Mode() == cgroups.Unified]
	wait.For(t, 30*time.Second, "the big env's 200MiB allocation in its cgroup", func() bool {
		n, _ := strconv.ParseInt(readCg(t, parent+"/big-one", "memory", usage), 10, 64)
		return n >= 150<<20
	})
	// big-one is the least recently used too; make it the most recent,
	// so only its memory can make it the victim.
	calm.Release()
	hog.Release()
	waitState(t, f.M, "big-one", lifecycle.Stopped, 20*time.Second)
	if s := stateOf(f.M, "calm"); s != lifecycle.Ready {
		t.Fatalf("small env is %v, want ready: the largest goes first", s)
	}
}

// TestBootCPUWeight: an env's cgroup has a booting env's CPU weight (that
// of a nice 19 task) until its dev server is ready, and a serving env's
// after. The kernel shares the CPUs among sibling cgroups by weight, so
// the dev server's own nice value does not make a booting env yield to
// envs already serving; the weight does.
func TestBootCPUWeight(t *testing.T) {
	file, boot, serving := "cpu.shares", "15", "1024"
	if cgroups.Mode() == cgroups.Unified {
		file, boot, serving = "cpu.weight", "1", "100"
	}
	parent := cgroupParent(t)
	slow := lifecycletest.Demo(lifecycletest.DemoOptions{BootDelay: 2 * time.Second})
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{slow}}, devserver.Config{CgroupParent: parent})
	cg := parent + "/w"
	type result struct {
		l   *lifecycle.Lease
		err error
	}
	got := make(chan result, 1)
	go func() {
		l, err := f.M.Acquire(t.Context(), "w")
		got <- result{l, err}
	}()
	wait.For(t, 10*time.Second, "the env's cgroup", func() bool {
		_, err := os.Stat(cgFile(cg, "pids", ""))
		return err == nil
	})
	_, noCPU := os.Stat(cgFile(cg, "cpu", file))
	if noCPU == nil {
		if w := readCg(t, cg, "cpu", file); w != boot {
			t.Errorf("while the dev server boots: %s = %s, want %s", file, w, boot)
		}
	}
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.l.Release()
	if noCPU != nil {
		t.Skipf("the env's cgroup has no cpu controller: %v", noCPU)
	}
	if w := readCg(t, cg, "cpu", file); w != serving {
		t.Errorf("once it is ready: %s = %s, want %s", file, w, serving)
	}
}
