package lifecycle_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/netns"
)

func TestTemplateUser(t *testing.T) {
	for _, tc := range []struct {
		user      string
		allowRoot bool
		wantErr   string
	}{
		{user: "nobody"},
		{user: "65534:65534"},
		{user: "65534"},
		{user: "root", wantErr: "allow_root"},
		{user: "0:0", wantErr: "allow_root"},
		{user: "0:0", allowRoot: true},
		{user: "no-such-user-here", wantErr: "no-such-user-here"},
		{user: "1:x", wantErr: "uid:gid"},
	} {
		t.Run(tc.user, func(t *testing.T) {
			tp := &lifecycle.Template{Name: "t", Command: []string{"true"}, Port: 3000, User: tc.user, AllowRoot: tc.allowRoot}
			err := tp.Prepare()
			if tc.wantErr == "" && err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "user: ")) {
				t.Fatalf("Prepare: %v, want a user: error mentioning %q", err, tc.wantErr)
			}
		})
	}
}

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

func TestDevServerRunsUnprivileged(t *testing.T) {
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("needs /usr/bin/python3 as a dev server any user can run")
	}
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
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{tp}, CgroupParent: parent})
	// t.TempDir makes 0700 dirs; the env's user must reach its data dir.
	for d := f.dataDir; d != filepath.Dir(os.TempDir()); d = filepath.Dir(d) {
		if strings.HasPrefix(d, os.TempDir()+"/") {
			os.Chmod(d, 0o755)
		}
	}
	l := acquire(t, f.m, "jailed")
	defer l.Release()
	pids, err := netns.PidsIn(filepath.Join(netns.RunDir, f.nsm.Prefix()+"-jailed"))
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
	fi, err := os.Stat(filepath.Join(f.dataDir, "jailed"))
	if err != nil {
		t.Fatal(err)
	}
	if s := fi.Sys().(*syscall.Stat_t); s.Uid != 65534 || s.Gid != 65534 {
		t.Errorf("data dir owned by %d:%d, want the env's user 65534:65534", s.Uid, s.Gid)
	}
}
