package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/loadtest/demo"
	"github.com/envgate/envgate/netns"
)

// TestFailedRestartChangesNothing: a restart whose new process fails to
// start (here: the new config's metrics address is taken) leaves the
// running gateway as it was: the same env process answers, its namespace
// and the firewall table are there, and the pid file names the old
// process. The new process failed after it had made its own env manager,
// firewall and cluster step, so a failed start that stopped "its" envs or
// removed "its" table would have taken the old process's.
func TestFailedRestartChangesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	instance, cfgPath, addr := testInstance(t, 4, "")
	g := startServe(t, cfgPath, addr)
	parent := g.cmd.Process.Pid
	pidPath := filepath.Join(filepath.Dir(cfgPath), "state", "run", instance+".pid")
	// If the new process took over after all, stop it too.
	t.Cleanup(func() { stopSuccessor(t, pidPath, parent) })
	t.Cleanup(func() { g.stop(t, syscall.SIGTERM) }) // its envs with it, before the leak check

	envPid := func() (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+g.addr+"/", nil)
		req.Host = "e0.localhost"
		req.Header.Set("Accept", "application/json")
		resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("GET e0: %v", err)
		}
		defer resp.Body.Close()
		var p demo.Page
		if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET e0: %d, %v", resp.StatusCode, err)
		}
		return p.PID, resp.Header.Get(gateway.ColdStartHeader)
	}
	before, _ := envPid()
	namespaces, _ := instanceState(t, instance)
	if len(namespaces) == 0 {
		t.Fatal("e0 runs, but no namespace of the instance is there")
	}
	waitFor(t, "pid file", func() bool { return readPid(pidPath) == parent })

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	f, err := os.OpenFile(cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString("admin: {metrics: \"" + taken.Addr().String() + "\"}\n")
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(parent, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the restart to fail", func() bool { return strings.Contains(g.log.String(), "restart failed; still serving") })

	after, cold := envPid()
	if after != before || cold != "" {
		t.Errorf("after the failed restart, e0 is dev server pid %d (cold start %q); want pid %d still, warm", after, cold, before)
	}
	if now, _ := instanceState(t, instance); !slices.Equal(now, namespaces) {
		t.Errorf("after the failed restart, the instance's namespaces are %v; want %v", now, namespaces)
	}
	out, _ := exec.Command("nft", "list", "tables").Output()
	if table := netns.TableName(instance); !strings.Contains(string(out), " "+table+"\n") {
		t.Errorf("after the failed restart, the firewall table %s is gone", table)
	}
	if pid := readPid(pidPath); pid != parent {
		t.Errorf("pid file names %d, want the serving process %d", pid, parent)
	}
}
