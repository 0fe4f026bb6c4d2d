package netnstest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
