package devserver_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/netns"
)

// procStatus returns the fields of /proc/PID/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		out[k] = strings.TrimSpace(v)
	}
	return out
}

// TestDevServerRunsUnprivileged runs a dev server as nobody through the
// trampoline, once as the test binary (what a gateway without
// envgate-init beside it does) and once as envgate-init; either binary
// lies in a directory only root may enter (go test's build dir, a 0700
// temporary dir), which the trampoline must not need.
func TestDevServerRunsUnprivileged(t *testing.T) {
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("needs /usr/bin/python3 as a dev server any user can run")
	}
	t.Run("own-binary", func(t *testing.T) { runsUnprivileged(t, py, devserver.Config{}) })
	t.Run("envgate-init", func(t *testing.T) {
		bin := buildInit(t)
		runsUnprivileged(t, py, devserver.Config{InitPath: bin})
		if fi, err := os.Stat(filepath.Dir(bin)); err != nil || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Fatalf("%s: %v %v, want a 0700 dir of root's that the dev server's user cannot enter", filepath.Dir(bin), fi.Mode(), err)
		}
	})
}

func runsUnprivileged(t *testing.T, py string, ds devserver.Config) {
	tp := &lifecycle.Template{
		Name:    "py",
		Command: []string{py, "-m", "http.server", "--bind", "0.0.0.0", "{{.Port}}"},
		Port:    3000,
		Ready:   lifecycle.Probe{Timeout: 20 * time.Second},
		User:    "nobody",
	}
	if err := tp.Prepare(); err != nil {
		t.Fatal(err)
	}
	parent := cgroupParent(t)
	ds.CgroupParent = parent
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{tp}}, ds)
	// t.TempDir makes 0700 dirs; the env's user must reach its data dir.
	for d := f.DataDir; d != filepath.Dir(os.TempDir()); d = filepath.Dir(d) {
		if strings.HasPrefix(d, os.TempDir()+"/") {
			os.Chmod(d, 0o755)
		}
	}
	l := acquire(t, f.M, "jailed")
	defer l.Release()
	pids, err := netns.PidsIn(filepath.Join(netns.RunDir, f.NSM.Prefix()+"-jailed"))
	if err != nil || len(pids) != 1 {
		t.Fatalf("processes in env: %v %v, want the server", pids, err)
	}
	st := procStatus(t, pids[0])
	for k, want := range map[string]string{
		"Uid":        "65534\t65534\t65534\t65534",
		"Gid":        "65534\t65534\t65534\t65534",
		"Groups":     "",
		"NoNewPrivs": "1",
		"CapEff":     "0000000000000000",
		"CapPrm":     "0000000000000000",
		"CapAmb":     "0000000000000000",
	} {
		if st[k] != want {
			t.Errorf("dev server %s: %q, want %q", k, st[k], want)
		}
	}
	if cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pids[0])); !strings.Contains(string(cg), parent+"/jailed") {
		t.Errorf("dev server's cgroups:\n%s\nwant %s/jailed", cg, parent)
	}
	if !strings.Contains(st["Name"], "python") {
		t.Errorf("dev server is %q, want python (the trampoline must exec it)", st["Name"])
	}
	// The trampoline's own GOMAXPROCS=1 is not the dev server's.
	if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pids[0])); err != nil || strings.Contains("\x00"+string(env), "\x00GOMAXPROCS=") {
		t.Errorf("dev server's environment (%v): %q, want no GOMAXPROCS", err, env)
	}
	fi, err := os.Stat(filepath.Join(f.DataDir, "jailed"))
	if err != nil {
		t.Fatal(err)
	}
	if s := fi.Sys().(*syscall.Stat_t); s.Uid != 65534 || s.Gid != 65534 {
		t.Errorf("data dir owned by %d:%d, want the env's user 65534:65534", s.Uid, s.Gid)
	}
}
