package netnstest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/envgate/envgate/netns"
)

// TestSweepDeadRemovesWhatADeadTestLeft: a prefix recorded by a test
// process that has exited loses its namespaces and its record.
func TestSweepDeadRemovesWhatADeadTestLeft(t *testing.T) {
	RequireRoot(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	prefix := "tdead" + strconv.Itoa(os.Getpid()%1000)
	m, err := netns.New(netns.Config{Prefix: prefix, Pool: Pool(7)})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := m.Create(context.Background(), "left")
	if err != nil {
		t.Fatal(err)
	}
	sb.Close() // as the dead process's handle would be
	t.Cleanup(func() { CheckClean(t, prefix) })
	if err := os.MkdirAll(ownersDir, 0o755); err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(ownersDir, prefix)
	if err := os.WriteFile(record, []byte(strconv.Itoa(dead.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(record) })

	sweepDead(t)
	if ids, _ := m.List(); len(ids) != 0 {
		t.Fatalf("namespaces %v of the dead test's prefix remain", ids)
	}
	if _, err := os.Stat(record); !os.IsNotExist(err) {
		t.Fatalf("record of the dead test's prefix remains: %v", err)
	}
}

// recorder is a testing.TB that keeps what CheckClean reports.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestCheckCleanReportsCgroups: an env cgroup of the instance left after
// a test is a leak that CheckClean reports, and removes.
func TestCheckCleanReportsCgroups(t *testing.T) {
	prefix := Prefix(t)
	var hier string
	for _, root := range cgroupRoots {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", root, "cgroup.procs")); err == nil {
			hier = filepath.Join("/sys/fs/cgroup", root)
			break
		}
	}
	if hier == "" {
		t.Skip("no cgroup hierarchy envgate uses is mounted")
	}
	env := filepath.Join(hier, "envgate", prefix, "e1")
	if err := os.MkdirAll(env, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeCgroups("envgate/" + prefix) })

	r := &recorder{TB: t}
	CheckClean(r, prefix)
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], env) {
		t.Fatalf("CheckClean reported %q, want one leak naming %s", r.errs, env)
	}
	if left := cgroupsLeft("envgate/" + prefix); len(left) != 0 {
		t.Fatalf("CheckClean left %v", left)
	}
}
