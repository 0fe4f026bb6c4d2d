package devserver

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestAwaitExit: a child's pidfd and a blocking pidfd (as handed over by
// another process) both wake their waiter when the process exits, and
// cmd.Wait then reports its status.
func TestAwaitExit(t *testing.T) {
	for _, handed := range []bool{false, true} {
		cmd := exec.Command("sh", "-c", "read x; exit 3")
		w, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		var f *os.File
		if handed {
			fd, perr := unix.PidfdOpen(cmd.Process.Pid, 0)
			if perr != nil {
				t.Fatal(perr)
			}
			f, err = pollablePidfd(os.NewFile(uintptr(fd), "blocking"))
		} else {
			f, err = openPidfd(cmd.Process.Pid)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		done := make(chan error, 1)
		go func() { done <- awaitExit(f) }()
		select {
		case err := <-done:
			t.Fatalf("handed %v: awaitExit returned %v while the process runs", handed, err)
		default:
		}
		w.Close() // the shell reads EOF and exits
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("handed %v: %v", handed, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("handed %v: awaitExit did not return within 10s of the exit", handed)
		}
		err = cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
			t.Fatalf("handed %v: Wait: %v, want exit status 3", handed, err)
		}
	}
}
