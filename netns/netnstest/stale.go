package netnstest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/envgate/envgate/netns"
)

// A test process that is killed (a timeout, a signal, a closed pipe) runs
// no cleanups: its namespaces, dev servers (which outlive a dead gateway
// by design) and cgroups stay. Every prefix handed out is therefore
// recorded under ownersDir with the pid of its test process, and the
// first Prefix call of each test process removes what the dead ones left.
const ownersDir = "/run/envgate-tests"

var sweepOnce sync.Once

// own records that this process uses prefix, and, once per process,
// removes the leftovers of test processes that died.
func own(t testing.TB, prefix string) {
	t.Helper()
	sweepOnce.Do(func() { sweepDead(t) })
	if err := os.MkdirAll(ownersDir, 0o755); err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	f := filepath.Join(ownersDir, prefix)
	if err := os.WriteFile(f, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	tellParent(t, prefix)
	t.Cleanup(func() { os.Remove(f) })
}

// sweepDead removes everything of the recorded prefixes whose test
// process is gone: namespaces, veths and the processes in them, and the
// cgroups `envgate serve` makes (envgate/<instance>).
func sweepDead(t testing.TB) {
	ents, _ := os.ReadDir(ownersDir)
	for _, e := range ents {
		f := filepath.Join(ownersDir, e.Name())
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err == nil && pid > 0 && syscall.Kill(pid, 0) == nil {
			continue // alive (or its pid reused: then left for later)
		}
		prefix := e.Name()
		if m, err := netns.New(netns.Config{Prefix: prefix}); err == nil {
			if left, err := m.GC(nil); err != nil || !left.Empty() {
				t.Logf("netnstest: removed what dead test process %d left under prefix %s: %+v %v", pid, prefix, left, err)
			}
		}
		netns.RemoveFirewall(prefix)
		removeCgroups("envgate/" + prefix)
		removeForeign(prefix)
		os.Remove(f)
	}
}

// cgroupRoots are the hierarchies envgate makes env cgroups in: cgroup v1's
// controllers, and the v2 root ("").
var cgroupRoots = []string{"memory", "cpu", "pids", ""}

// cgroupsLeft returns the cgroup directories at and below parent that
// exist, on cgroup v1 and v2.
func cgroupsLeft(parent string) []string {
	var left []string
	for _, root := range cgroupRoots {
		dir := filepath.Join("/sys/fs/cgroup", root, parent)
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		left = append(left, dir)
		for _, e := range ents {
			if e.IsDir() {
				left = append(left, filepath.Join(dir, e.Name()))
			}
		}
	}
	return left
}

// removeCgroups removes the (empty, once GC killed their processes)
// cgroups below parent and parent itself, on cgroup v1 and v2; best
// effort. (lifecycle.RemoveCgroups does this for `envgate gc`; its tests
// use this package, so it cannot be called from here.)
func removeCgroups(parent string) {
	for _, root := range cgroupRoots {
		dir := filepath.Join("/sys/fs/cgroup", root, parent)
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.IsDir() {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
		os.Remove(dir)
	}
}
