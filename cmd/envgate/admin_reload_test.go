package main

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/envgate/envgate/gateway/admin"
)

// TestAdminReload: POST /v1/reload restarts the gateway in place (as
// SIGHUP does): the new process serves the admin socket at the same path,
// reports its own pid, and has adopted the running env (same dev server).
func TestAdminReload(t *testing.T) {
	instance, cfg, addr := testInstance(t, 6, "") // skips when not root
	g := startServe(t, cfg, addr)
	parent := g.cmd.Process.Pid
	pidPath := filepath.Join(filepath.Dir(cfg), "state", "run", instance+".pid")
	// After startServe, so it runs first: the successor is no child of ours.
	t.Cleanup(func() { stopSuccessor(t, pidPath, parent) })
	if code, _, _ := g.get(t, "alpha.localhost", "/"); code != 200 {
		t.Fatalf("alpha: %d", code)
	}
	before := lsJSON(t, cfg)["alpha"]
	c, err := (&globalFlags{config: cfg}).adminClient()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.JSON(context.Background(), "POST", "/v1/reload", nil); err != nil {
		t.Fatal(err)
	}
	var child int
	waitFor(t, "the new process's pid file", func() bool {
		child = readPid(pidPath)
		return child != 0 && child != parent
	})
	waitFor(t, "the old process to exit", func() bool { return !alive(parent) })
	var st admin.Status
	if err := c.JSON(context.Background(), "GET", "/v1/status", &st); err != nil {
		t.Fatalf("status after the reload (socket at the same path): %v", err)
	}
	if st.Pid != child {
		t.Errorf("status pid %d, want the new process's %d", st.Pid, child)
	}
	if after := lsJSON(t, cfg)["alpha"]; after.Pid != before.Pid || after.State != "ready" {
		t.Errorf("alpha after the reload: pid %d (was %d), %s; want the same dev server, adopted", after.Pid, before.Pid, after.State)
	}
}
