package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestThousandEnvs starts 1,000 demo envs through a real gateway process
// and checks what they cost the gateway (issue 10, items 4 and 7): fewer
// than 100 OS threads and at most 150 MiB RSS with all of them live, then
// SIGTERM stops everything within 5 s and leaves no namespace, veth,
// process or cgroup of the instance.
func TestThousandEnvs(t *testing.T) {
	scaleTest(t)
	const (
		envs       = 1000
		clients    = 8
		maxThreads = 100
		maxRSS     = 150 << 20
		maxStop    = 5 * time.Second
	)
	instance, cfg, addr := testInstance(t, 6, "")
	stateDir := filepath.Join(filepath.Dir(cfg), "state")
	// Registered before the gateway's own cleanup (which kills it), so it
	// runs after it: whatever a failed run left goes.
	t.Cleanup(func() {
		if out, err := exec.Command(envgateBinary(t), "gc", "--config", cfg).CombinedOutput(); err != nil {
			t.Logf("envgate gc: %v\n%s", err, out)
		}
		for _, dir := range instanceCgroups(instance) {
			removeCgroupTree(dir)
		}
	})
	g := startServe(t, cfg, addr)
	pid := g.cmd.Process.Pid

	tr := &http.Transport{MaxIdleConnsPerHost: clients, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var next, started atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	began := time.Now()
	for range clients {
		wg.Go(func() {
			for ctx.Err() == nil && firstErr.Load() == nil {
				i := next.Add(1) - 1
				if i >= envs {
					return
				}
				if err := getOK(ctx, client, fmt.Sprintf("http://s%d.localhost/healthz", i)); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				started.Add(1)
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		t.Fatalf("after %d envs started: %v", started.Load(), *p)
	}
	if n := started.Load(); n != envs {
		t.Fatalf("%d of %d envs started within 5 minutes", n, envs)
	}
	t.Logf("%d envs started in %v (%d clients)", envs, time.Since(began).Round(time.Millisecond), clients)

	threads, rss := procStatus(t, pid)
	t.Logf("gateway with %d live envs: %d threads, RSS %d MiB", envs, threads, rss>>20)
	if threads >= maxThreads {
		t.Errorf("gateway has %d OS threads with %d live envs, want fewer than %d", threads, envs, maxThreads)
	}
	if rss > maxRSS {
		t.Errorf("gateway RSS %d MiB with %d live envs, want at most %d MiB", rss>>20, envs, maxRSS>>20)
	}
	tr.CloseIdleConnections()

	stopBegan := time.Now()
	g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("gateway did not exit within 60s of SIGTERM with %d envs", envs)
	}
	took := time.Since(stopBegan)
	t.Logf("SIGTERM to exit with %d envs: %v", envs, took.Round(time.Millisecond))
	if took > maxStop {
		t.Errorf("gateway took %v to exit on SIGTERM with %d envs, want at most %v", took.Round(time.Millisecond), envs, maxStop)
	}
	ns, links := instanceState(t, instance)
	if len(ns)+len(links) > 0 {
		t.Errorf("after SIGTERM: %d namespaces, %d links of the instance remain (first: %v %v)", len(ns), len(links), first(ns), first(links))
	}
	if pids := processesWithArg(filepath.Join(stateDir, "envs")); len(pids) > 0 {
		t.Errorf("after SIGTERM: %d dev servers remain (pids %v)", len(pids), first(pids))
	}
	if cgs := instanceCgroups(instance); len(cgs) > 0 {
		t.Errorf("after SIGTERM: cgroups remain: %v", cgs)
	}
}

// getOK requests url and reads the response, which must be a 200.
func getOK(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %.200s", url, resp.Status, body)
	}
	return nil
}

// procStatus returns the threads and resident memory (bytes) of pid.
func procStatus(t *testing.T, pid int) (threads int, rss int64) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "Threads:":
			threads, _ = strconv.Atoi(f[1])
		case len(f) >= 3 && f[0] == "VmRSS:" && f[2] == "kB":
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			rss = kb << 10
		}
	}
	if threads == 0 || rss == 0 {
		t.Fatalf("/proc/%d/status: no Threads or VmRSS:\n%s", pid, b)
	}
	return threads, rss
}

// processesWithArg lists the processes whose command line holds an
// argument under dir (the demo's --data-dir).
func processesWithArg(dir string) []string {
	ents, _ := os.ReadDir("/proc")
	var pids []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for _, arg := range strings.Split(string(b), "\x00") {
			if strings.HasPrefix(arg, dir+"/") {
				pids = append(pids, e.Name())
				break
			}
		}
	}
	return pids
}

// instanceCgroups lists the instance's cgroup directories (envgate/<instance>
// under each hierarchy, v1 or v2).
func instanceCgroups(instance string) []string {
	var dirs []string
	for _, pattern := range []string{"/sys/fs/cgroup/*/envgate/" + instance, "/sys/fs/cgroup/envgate/" + instance} {
		m, _ := filepath.Glob(pattern)
		dirs = append(dirs, m...)
	}
	return dirs
}

// removeCgroupTree removes dir and the cgroups under it, deepest first;
// processes left in them are killed first.
func removeCgroupTree(dir string) {
	subs, _ := filepath.Glob(filepath.Join(dir, "*", "cgroup.procs"))
	for _, procs := range subs {
		b, _ := os.ReadFile(procs)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		os.Remove(filepath.Dir(procs))
	}
	os.Remove(dir)
}

func first[T any](s []T) []T { return s[:min(len(s), 3)] }
