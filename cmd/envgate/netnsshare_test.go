package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
	"golang.org/x/sys/unix"
)

// TestIPNetnsAddDuringServe is issue 10's test 3: another user of
// /run/netns (`ip netns add`, as iproute2, CNI and Docker do it) in the
// middle of a gateway's life, on a machine where /run/netns was no mount
// point, must not make envgate's namespaces outlive it: after SIGTERM no
// namespace, mount, veth or dev server of the instance remains, and the
// other program's namespace still works. It runs in a mount namespace of
// its own (see netnstest.InPrivateMountNamespace), so the machine's
// /run/netns stays as it is.
func TestIPNetnsAddDuringServe(t *testing.T) {
	if !netnstest.InPrivateMountNamespace(t) {
		return
	}
	instance, cfg, addr := testInstance(t, 6, "")
	stateDir := filepath.Join(filepath.Dir(cfg), "state")
	g := startServe(t, cfg, addr)
	var envs []string
	for i := range 3 {
		envs = append(envs, fmt.Sprintf("share%d", i))
	}
	for _, env := range envs {
		if code, body, _ := g.get(t, env+".localhost", "/"); code != 200 || !strings.Contains(body, env) {
			t.Fatalf("%s: %d %q", env, code, body)
		}
	}
	foreign := netnstest.IPNetnsAdd(t, instance)
	// An env started after it, too.
	envs = append(envs, "share3")
	if code, body, _ := g.get(t, "share3.localhost", "/"); code != 200 || !strings.Contains(body, "share3") {
		t.Fatalf("share3 after ip netns add: %d %q", code, body)
	}
	if ns, links := instanceState(t, instance); len(ns) != len(envs) || len(links) != len(envs) {
		t.Fatalf("while serving: namespaces %v links %v, want %d of each", ns, links, len(envs))
	}

	stopped := time.Now()
	g.stop(t, syscall.SIGTERM)
	t.Logf("SIGTERM to exit: %v", time.Since(stopped).Round(time.Millisecond))
	if os.Getenv("ENVGATE_TEST_SHOWLOG") != "" {
		t.Log(g.log.String())
	}
	if ns, links := instanceState(t, instance); len(ns)+len(links) != 0 {
		t.Errorf("after SIGTERM: namespaces %v links %v remain", ns, links)
	}
	if mounts := mountsUnder(t, filepath.Join(netns.RunDir, instance+"-")); len(mounts) > 0 {
		t.Errorf("after SIGTERM: namespace mounts %v remain", mounts)
	}
	// Dev servers get a data dir under the instance's state dir.
	if out, _ := exec.Command("pgrep", "-a", "-f", "data-dir "+regexp.QuoteMeta(stateDir)).Output(); len(out) > 0 {
		t.Errorf("dev servers survived the gateway:\n%s", out)
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if pid, err := strconv.Atoi(strings.Fields(line)[0]); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if strings.Contains(g.log.String(), "busy") {
		t.Errorf("the gateway's log reports busy resources:\n%s", g.log.String())
	}
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Join(netns.RunDir, foreign), &st); err != nil || st.Type != unix.NSFS_MAGIC {
		t.Errorf("%s is no longer a mounted namespace after the gateway stopped (statfs type %#x, %v)", foreign, st.Type, err)
	}
}

// mountsUnder lists the mount points in this mount namespace that start
// with prefix.
func mountsUnder(t *testing.T, prefix string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], prefix) {
			out = append(out, fields[4])
		}
	}
	return out
}
