package netns_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
	"golang.org/x/sys/unix"
)

// nsID is the inode of a namespace file, as readlink shows it ("net:[N]").
func nsID(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return strconv.FormatUint(st.Ino, 10)
}

// A child with a mount namespace of its own is forked by the spawner:
// from a thread whose descriptor table holds a handful of descriptors
// however many the process has open, and none of the process's files
// (closing a pipe still ends it); in the sandbox's network namespace, with
// the thread back in the process's afterwards; and with cmd.Process and
// the pidfd set as cmd.Start sets them.
func TestSpawnerForksFromASmallTable(t *testing.T) {
	netnstest.RequireRoot(t)
	m := newManager(t)
	sb := create(t, m, "sp")
	// A spawner of this test's: it is made after the pipe below.
	netns.StopSpawner()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	var many []*os.File
	t.Cleanup(func() {
		for _, f := range many {
			f.Close()
		}
	})
	for range 200 {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		many = append(many, r, w)
	}

	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("/bin/sh", "-c", "readlink /proc/self/ns/net; ls /proc/self/fd | wc -l")
	pidfd := -1
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS, PidFD: &pidfd}
	if err := sb.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if pidfd < 0 {
		t.Error("no pidfd for the child")
	} else {
		unix.Close(pidfd)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	tids := netns.SpawnerTIDs()
	if len(tids) == 0 {
		t.Fatalf("no spawner runs after a start with a mount namespace of its own: %v", netns.SpawnerFailed())
	}
	got, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(got))
	if want := "net:[" + nsID(t, sb.Path()) + "]"; len(lines) != 2 || lines[0] != want {
		t.Errorf("child says %q, want its namespace %s first", got, want)
	}

	for _, tid := range tids {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/self/task/%d/fd", tid))
		if err != nil {
			t.Fatal(err)
		}
		if all, _ := os.ReadDir("/proc/self/fd"); len(fds) > 16 || len(all) < 400 {
			t.Errorf("spawner thread %d holds %d descriptors (the process %d), want at most 16", tid, len(fds), len(all))
		}
		if got, want := nsID(t, fmt.Sprintf("/proc/self/task/%d/ns/net", tid)), nsID(t, "/proc/self/ns/net"); got != want {
			t.Errorf("spawner thread %d stayed in network namespace %s, want the process's %s", tid, got, want)
		}
	}

	// The pipe made before the spawner ends when the process closes its
	// write end: the spawner kept no copy.
	pw.Close()
	pr.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := pr.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("read from a pipe whose write end the process closed: %d, %v; want EOF", n, err)
	}
}

// A program named by a descriptor of the process (/proc/self/fd/N, as the
// trampoline is) runs through the spawner, and a command the spawner
// cannot run as exec.Cmd would (output into a buffer) still starts.
func TestSpawnerExecsDescriptorPaths(t *testing.T) {
	netnstest.RequireRoot(t)
	m := newManager(t)
	sb := create(t, m, "spfd")
	fd, err := unix.Open("/bin/sh", unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	high, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(high)
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("/proc/self/fd/"+strconv.Itoa(high), "-c", "echo ok; exit 3")
	cmd.Stdout = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	if err := sb.Start(cmd); err != nil {
		t.Fatal(err)
	}
	var ee *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("wait: %v, want exit status 3", err)
	}
	if got, _ := os.ReadFile(out.Name()); string(got) != "ok\n" {
		t.Errorf("output %q, want ok", got)
	}

	var buf bytes.Buffer
	cmd = exec.Command("/bin/echo", "buffered")
	cmd.Stdout = &buf
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	if err := sb.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil || buf.String() != "buffered\n" {
		t.Errorf("wait: %v, output %q", err, buf.String())
	}
}

// A start in progress does not hold up another: a fork waits for its
// child's exec, which may be slow on a busy machine (a child booting at a
// low priority), so the spawner has a thread per start in progress.
func TestSpawnerStartsDoNotWaitForEachOther(t *testing.T) {
	netnstest.RequireRoot(t)
	m := newManager(t)
	sb := create(t, m, "spw")
	newCmd := func() *exec.Cmd {
		cmd := exec.Command("/bin/true")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
		return cmd
	}
	held, release := make(chan struct{}), make(chan struct{})
	first := newCmd()
	firstDone := make(chan error, 1)
	go func() {
		firstDone <- sb.StartWith(first, func() error {
			close(held)
			<-release
			return nil
		}, nil)
	}()
	<-held
	second := newCmd()
	secondDone := make(chan error, 1)
	go func() { secondDone <- sb.Start(second) }()
	select {
	case err := <-secondDone:
		if err != nil {
			t.Error(err)
		} else if err := second.Wait(); err != nil {
			t.Error(err)
		}
	case <-time.After(10 * time.Second):
		t.Error("a start waited for another one in progress")
	}
	close(release)
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	if err := first.Wait(); err != nil {
		t.Error(err)
	}
	if n := len(netns.SpawnerTIDs()); n < 2 {
		t.Errorf("%d spawner threads after two starts at once, want 2 or more", n)
	}
}
