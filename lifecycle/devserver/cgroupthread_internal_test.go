package devserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envgate/envgate/lifecycle"

	"github.com/containerd/cgroups/v3"
	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
)

// threadCgroups returns each thread of this process mapped to the
// contents of its cgroup file.
func threadCgroups(t *testing.T) map[string]string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, ent := range ents {
		if b, err := os.ReadFile(filepath.Join("/proc/self/task", ent.Name(), "cgroup")); err == nil {
			out[ent.Name()] = string(b)
		}
	}
	return out
}

func TestStartInCgroupsV1(t *testing.T) {
	netnstest.RequireRoot(t)
	if cgroups.Mode() == cgroups.Unified {
		t.Skip("cgroup v1 only; v2 clones into the cgroup")
	}
	home, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	nsm, err := netns.New(netns.Config{Prefix: netnstest.Prefix(t), Pool: netnstest.Pool(poolBlock)})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := nsm.Create(context.Background(), "thr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nsm.Destroy(sb) })
	parent := fmt.Sprintf("envgate-test/%d-internal", os.Getpid())
	cg, err := newCgroup(parent, "thr", lifecycle.Resources{Memory: 64 << 20, Pids: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cg.remove(); err != nil {
			t.Error(err)
		}
		for _, ctrl := range []string{"memory", "cpu", "pids"} {
			os.Remove(filepath.Join(cgroupMount, ctrl, parent))
			os.Remove(filepath.Join(cgroupMount, ctrl, filepath.Dir(parent)))
		}
	})
	join, err := cg.procsFiles(nil)
	if err != nil || len(join) == 0 {
		t.Fatalf("procsFiles: %v %v", join, err)
	}
	missing := filepath.Join(cgroupMount, "memory", parent, "no-such-cgroup", "cgroup.procs")

	for _, tc := range []struct {
		name    string
		join    []string
		wantErr error // nil: the child starts, in the cgroups
	}{
		{name: "joins", join: join},
		{name: "undoes a half-done join", join: append(append([]string{}, join...), missing), wantErr: os.ErrNotExist},
		{name: "no home in a hierarchy", join: []string{filepath.Join(cgroupMount, "no-such-controller", "x", "cgroup.procs")}, wantErr: errCannotCarry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := os.CreateTemp(t.TempDir(), "out")
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			var cmd *exec.Cmd
			for range 5 {
				cmd = exec.Command("/bin/cat", "/proc/self/cgroup")
				cmd.Stdout = out
				err = startInCgroupsV1(sb, cmd, tc.join)
				// Seldom the forking goroutine lands on the main thread,
				// which refuses (spawn then takes the trampoline).
				if !errors.Is(err, errMainThread) {
					break
				}
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || cmd.Process != nil {
					t.Fatalf("start: %v (started: %v), want %v and nothing started", err, cmd.Process != nil, tc.wantErr)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Wait(); err != nil {
					t.Fatal(err)
				}
				b, _ := os.ReadFile(out.Name())
				for _, f := range join {
					ctrl, _, _ := strings.Cut(strings.TrimPrefix(f, cgroupMount+"/"), "/")
					if !strings.Contains(string(b), ":"+ctrl+":/"+parent+"/thr\n") {
						t.Errorf("child not in %s cgroup %s/thr:\n%s", ctrl, parent, b)
					}
				}
			}
			for tid, cgs := range threadCgroups(t) {
				if cgs != string(home) {
					t.Errorf("thread %s is in\n%s\nwant\n%s", tid, cgs, home)
				}
			}
		})
	}
}
