package devserver_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
)

// cgroupsOf maps the memory, cpu and pids controllers to the cgroup path
// in a /proc/.../cgroup file ("" on cgroup v2, which has one line "0::").
func cgroupsOf(t testing.TB, file string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, ctrl := range strings.Split(parts[1], ",") {
			if ctrl == "memory" || ctrl == "cpu" || ctrl == "pids" || ctrl == "" {
				out[ctrl] = parts[2]
			}
		}
	}
	return out
}

// ownThreads maps each of the test process's threads to its cgroups.
func ownThreads(t testing.TB) map[string]map[string]string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for _, ent := range ents {
		if _, err := os.Stat(filepath.Join("/proc/self/task", ent.Name())); err != nil {
			continue // exited meanwhile
		}
		out[ent.Name()] = cgroupsOf(t, filepath.Join("/proc/self/task", ent.Name(), "cgroup"))
	}
	return out
}

// TestStartsLeaveGatewayThreadsInTheirCgroups starts many envs, some at
// once, whose dev servers fork, and checks that every dev server and its
// child are in their env's cgroups, and that every thread of the gateway
// (this test process) is back in the cgroups it started in: on cgroup v1
// the thread that forks a dev server visits the env's cgroups.
func TestStartsLeaveGatewayThreadsInTheirCgroups(t *testing.T) {
	home := cgroupsOf(t, "/proc/self/cgroup")
	for tid, cgs := range ownThreads(t) {
		if fmt.Sprint(cgs) != fmt.Sprint(home) {
			t.Fatalf("precondition: thread %s is in %v, the process in %v", tid, cgs, home)
		}
	}
	// The shell's child is started before the exec: it must be born in
	// the env's cgroup too.
	forker := lifecycletest.Shell(`(exec sleep 1000) & exec "$DEMO"`, 20*time.Second)
	forker.Resources = lifecycle.Resources{Memory: 256 << 20, CPUs: 1, Pids: 64}
	if err := forker.Prepare(); err != nil {
		t.Fatal(err)
	}
	parent := cgroupParent(t)
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{forker}, Limits: lifecycle.Limits{MaxStarting: 4}}, devserver.Config{CgroupParent: parent})
	const envs, atOnce = 24, 4
	ctrls := []string{"memory", "cpu", "pids"}
	if cgroups.Mode() == cgroups.Unified {
		ctrls = []string{""}
	}
	demoComm := filepath.Base(forker.Env["DEMO"]) // the kernel keeps 15 bytes of it
	demoComm = demoComm[:min(15, len(demoComm))]
	var wg sync.WaitGroup
	sem := make(chan struct{}, atOnce)
	errs := make(chan error, envs)
	for i := range envs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			l, err := f.M.Acquire(ctx, fmt.Sprintf("fork%d", i))
			if err != nil {
				errs <- err
				return
			}
			l.Release()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	for i := range envs {
		name := fmt.Sprintf("fork%d", i)
		want := "/" + parent + "/" + name
		var procs []int
		for _, comm := range []string{"sleep", demoComm} {
			procs = append(procs, pidsNamed(t, f, name, comm)...)
		}
		if len(procs) != 2 {
			t.Fatalf("env %s runs %v, want the demo and its sleep", name, procs)
		}
		for _, pid := range procs {
			cgs := cgroupsOf(t, fmt.Sprintf("/proc/%d/cgroup", pid))
			for _, ctrl := range ctrls {
				if cgs[ctrl] != want {
					t.Errorf("env %s: process %d is in %q cgroup %s, want %s", name, pid, ctrl, cgs[ctrl], want)
				}
			}
		}
	}
	self := strconv.Itoa(os.Getpid())
	for tid, cgs := range ownThreads(t) {
		if fmt.Sprint(cgs) != fmt.Sprint(home) {
			t.Errorf("gateway thread %s ended in %v, want %v", tid, cgs, home)
		}
	}
	// No cgroup.procs of any env lists the gateway (v1 lists a process
	// there when any of its threads is in the cgroup).
	for i := range envs {
		p := parent + "/" + fmt.Sprintf("fork%d", i)
		for _, ctrl := range ctrls {
			b, err := os.ReadFile(cgFile(p, ctrl, "cgroup.procs"))
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(strings.Fields(string(b)), self) {
				t.Errorf("the gateway is in %s cgroup %s", ctrl, p)
			}
		}
	}
}

// BenchmarkColdStartCgroup is BenchmarkColdStart with each env in a cgroup
// of its own (as `envgate serve` runs them), with and without a warm pool.
func BenchmarkColdStartCgroup(b *testing.B) {
	for _, warm := range []int{0, 4} {
		b.Run(fmt.Sprintf("warm=%d", warm), func(b *testing.B) {
			tp := lifecycletest.Demo(lifecycletest.DemoOptions{})
			tp.Resources = lifecycle.Resources{Memory: 512 << 20, CPUs: 1, Pids: 512}
			parent := fmt.Sprintf("envgate-bench/%d-%d", os.Getpid(), warm)
			b.Cleanup(func() { // after the manager's Close
				if _, err := devserver.RemoveCgroups(parent); err != nil {
					b.Error(err)
				}
				for _, ctrl := range []string{"memory", "cpu", "pids"} {
					os.Remove(cgFile("envgate-bench", ctrl, ""))
				}
			})
			f := benchFixture(b, lifecycle.Config{Templates: []*lifecycle.Template{tp}, WarmPool: warm}, devserver.Config{CgroupParent: parent})
			var cold []time.Duration
			ctx := context.Background()
			b.ResetTimer()
			for i := range b.N {
				l, err := f.M.Acquire(ctx, fmt.Sprintf("cold%d", i))
				if err != nil {
					b.Fatal(err)
				}
				cold = append(cold, l.Cold)
				l.Release()
				b.StopTimer()
				f.M.Stop(fmt.Sprintf("cold%d", i), "bench") // keep the load flat; lets the pool refill
				if warm == 0 {
					f.NSM.Settle(context.Background()) // as BenchmarkColdStart: let the namespace's cleanup finish
				}
				b.StartTimer()
			}
			slices.Sort(cold)
			b.ReportMetric(float64(lifecycletest.Percentile(cold, 50).Microseconds())/1000, "cold-p50-ms")
			b.ReportMetric(float64(lifecycletest.Percentile(cold, 99).Microseconds())/1000, "cold-p99-ms")
		})
	}
}
