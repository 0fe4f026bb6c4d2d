package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/netns/netnstest/wait"
)

// demoPage fetches env's demo page as JSON through the gateway process and
// reports the dev server's pid and whether the gateway had to start it.
func demoPage(t *testing.T, g *gatewayProc, env string) (pid int, cold bool) {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, g.addr)
	}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "http://"+env+".localhost/", nil)
	req.Header.Set("Accept", "application/json")
	resp, err := (&http.Client{Transport: tr, Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", env, err)
	}
	defer resp.Body.Close()
	var page struct {
		PID int `json:"pid"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: status %d, %v", env, resp.StatusCode, err)
	}
	return page.PID, resp.Header.Get("Envgate-Cold-Start") != ""
}

// waitRecorded waits until the gateway's state file lists every env in
// envs, and returns their recorded pids: in the host's pid namespace (the
// pid a demo page shows is its own namespace's).
func waitRecorded(t *testing.T, stateFile string, envs []string) map[string]int {
	t.Helper()
	var (
		on  map[string]int
		b   []byte
		err error
	)
	recorded := func() bool {
		var st struct {
			Envs []struct {
				Name string `json:"name"`
				Pid  int    `json:"pid"`
			} `json:"envs"`
		}
		if b, err = os.ReadFile(stateFile); err != nil || json.Unmarshal(b, &st) != nil {
			return false
		}
		on = map[string]int{}
		for _, e := range st.Envs {
			on[e.Name] = e.Pid
		}
		for _, e := range envs {
			if on[e] <= 0 {
				return false
			}
		}
		return true
	}
	if !wait.Until(10*time.Second, recorded) {
		t.Fatalf("state file %s does not list %v after 10s: %s (%v)", stateFile, envs, b, err)
	}
	return on
}

// running reports whether pid is a live (not zombie) process.
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

func TestRestartAfterKill(t *testing.T) {
	envs := []string{"alpha", "beta", "gamma"}
	for _, tc := range []struct {
		onRestart string
		adopt     bool
	}{
		{"adopt", true},
		{"clean", false},
	} {
		t.Run(tc.onRestart, func(t *testing.T) {
			instance, cfg, addr := testInstance(t, 3, "on_restart: "+tc.onRestart+"\n")
			g := startServe(t, cfg, addr)
			pids := map[string]int{}
			for _, env := range envs {
				pids[env], _ = demoPage(t, g, env)
			}
			// An env is on file shortly after it got ready, off the
			// request path: kill the gateway once all three are.
			hostPids := waitRecorded(t, filepath.Join(filepath.Dir(cfg), "state", "run", instance+".state.json"), envs)
			g.stop(t, syscall.SIGKILL)
			for _, env := range envs {
				if !running(hostPids[env]) {
					t.Fatalf("dev server of %s died with the gateway", env)
				}
			}

			g = startServe(t, cfg, addr)
			defer g.stop(t, syscall.SIGTERM) // stops the envs; Prefix checks for leaks
			if !tc.adopt {
				ns, links := instanceState(t, instance)
				if len(ns)+len(links) != 0 {
					t.Fatalf("on_restart clean left namespaces %v links %v", ns, links)
				}
				for _, env := range envs {
					if running(hostPids[env]) {
						t.Fatalf("on_restart clean left %s's dev server %d running", env, hostPids[env])
					}
				}
				return
			}
			for _, env := range envs {
				pid, cold := demoPage(t, g, env)
				if cold || pid != pids[env] || !running(hostPids[env]) {
					t.Fatalf("%s after restart: pid %d (was %d), host pid %d running %v, cold start %v; want the adopted server, warm", env, pid, pids[env], hostPids[env], running(hostPids[env]), cold)
				}
			}
			if !strings.Contains(g.log.String(), "adopted envs left running by the earlier run") {
				t.Fatalf("no adoption logged:\n%s", g.log.String())
			}
			if strings.Contains(g.log.String(), "adopted env has no cgroup") {
				t.Fatalf("adopted envs lost their cgroups:\n%s", g.log.String())
			}
		})
	}
}
