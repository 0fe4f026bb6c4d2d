package netns_test

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/envgate/envgate/netns"
)

// TestDestroyAll: processes in every namespace are killed, the
// namespaces go, and the slots come back once the kernel took the veths.
func TestDestroyAll(t *testing.T) {
	m := newManager(t)
	var sbs []*netns.Sandbox
	var cmds []*exec.Cmd
	for _, id := range []string{"a", "b", "c"} {
		sb, err := m.Create(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		sbs = append(sbs, sb)
		cmd := exec.Command("sleep", "300")
		if err := sb.Start(cmd); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		cmds = append(cmds, cmd)
	}
	if err := m.DestroyAll(sbs); err != nil {
		t.Fatal(err)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err == nil || cmd.ProcessState.Success() {
			t.Errorf("process in %s: %v, want killed", sbs[i].Name, err)
		}
		if _, err := os.Stat(sbs[i].Path()); !os.IsNotExist(err) {
			t.Errorf("%s: %v, want removed", sbs[i].Path(), err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if n := m.Pool().InUse(); n != 0 {
		t.Fatalf("%d slots in use after DestroyAll and Settle", n)
	}
}
