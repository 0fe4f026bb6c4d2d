package lifecycle_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
)

// startTime is field 22 of /proc/PID/stat, what the state file records.
func startTime(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	n, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A state file record whose process is alive, with the right start time,
// but outside the env's recorded namespace (an edited file, or a pid the
// file got wrong) is neither signalled nor adopted, even by on_restart
// clean, which kills every recorded env it accepts.
func TestRecoverLeavesProcessesOutsideTheRecordedNamespace(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "state.json")
	f := newFixture(t, lifecycle.Config{
		Templates: []*lifecycle.Template{lifecycletest.Demo(lifecycletest.DemoOptions{})},
		StateFile: stateFile,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sb, err := f.NSM.Create(ctx, "victim")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.NSM.Destroy(sb) })

	outside := exec.Command("sleep", "60")
	outside.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := outside.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = outside.Wait(); close(exited) }()
	t.Cleanup(func() { _ = outside.Process.Kill(); <-exited })

	rec := map[string]any{
		"name": "victim", "template": "demo", "namespace": sb.Path(), "addr": "10.214.16.2:3000",
		"pid": outside.Process.Pid, "pid_start": startTime(t, outside.Process.Pid),
		"started_at": time.Now(), "ready_at": time.Now(),
	}
	b, err := json.Marshal(map[string]any{"version": 1, "written": time.Now(), "envs": []any{rec}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stateFile, b, 0o600); err != nil {
		t.Fatal(err)
	}

	m2, _ := successor(t, f, stateFile)
	adopted, err := m2.Recover(false)
	if err != nil || len(adopted) != 0 {
		t.Fatalf("recover: adopted %v, %v; want nothing", adopted, err)
	}
	// Recover has returned, so any signal was sent; a SIGKILL takes effect
	// within milliseconds, so a second without an exit means none was.
	select {
	case <-exited:
		t.Fatalf("the process outside the recorded namespace was killed: %v", waitErr)
	case <-time.After(time.Second):
	}
}
