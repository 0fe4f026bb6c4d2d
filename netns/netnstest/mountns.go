package netnstest

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/netns"
	"golang.org/x/sys/unix"
)

const (
	// mountNSEnv names the test a child process runs in its own mount
	// namespace.
	mountNSEnv = "ENVGATE_TEST_PRIVATE_MOUNTNS"
	// prefixesEnv is a directory where that child records the prefixes
	// it uses, for the parent to clean up after it.
	prefixesEnv = "ENVGATE_TEST_PREFIXES_DIR"
)

// InPrivateMountNamespace runs the calling top-level test again in a child
// process that has a mount namespace of its own (every mount private), in
// which netns.RunDir is not a mount point and no namespace mount of any
// other program is left: such a test can run `ip netns add`, which turns
// RunDir into a mount point, and see what a fresh machine sees, without
// changing the machine's mounts or another test's namespaces. It returns
// true in the child, which goes on with the test; in the parent it waits
// for the child, fails t if the child failed, and returns false.
//
// Namespaces and veths are the machine's (only the mount namespace is
// private), so the leak checks of Prefix work in the child as anywhere.
func InPrivateMountNamespace(t *testing.T) bool {
	t.Helper()
	RequireRoot(t)
	if os.Getenv(mountNSEnv) == t.Name() {
		releaseCopiedMounts(t)
		return true
	}
	timeout := 5 * time.Minute
	if d, ok := t.Deadline(); ok && time.Until(d)-30*time.Second < timeout {
		timeout = time.Until(d) - 30*time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0],
		"-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.count=1", "-test.v",
		"-test.timeout="+(timeout-10*time.Second).String())
	prefixes := t.TempDir()
	cmd.Env = append(os.Environ(), mountNSEnv+"="+t.Name(), prefixesEnv+"="+prefixes)
	// With CLONE_NEWNS the runtime also makes every mount of the copy
	// private before exec: nothing the child mounts reaches the machine.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	// The child's namespace mounts died with its mount namespace; what a
	// failed or killed child left is files, veths and processes.
	ents, _ := os.ReadDir(prefixes)
	for _, e := range ents {
		if m, merr := netns.New(netns.Config{Prefix: e.Name()}); merr == nil {
			if left, gerr := m.GC(nil); gerr != nil || !left.Empty() {
				t.Logf("netnstest: removed what the child left under prefix %s: %+v %v", e.Name(), left, gerr)
			}
		}
		removeForeign(e.Name())
	}
	switch {
	case err != nil:
		t.Errorf("in a private mount namespace: %v\n%s", err, out)
	case !strings.Contains(string(out), "--- PASS: "+t.Name()):
		t.Errorf("in a private mount namespace: the test did not run:\n%s", out)
	default:
		t.Logf("in a private mount namespace:\n%s", out)
	}
	return false
}

// releaseCopiedMounts removes, from this process's new mount namespace,
// the layers of RunDir and every namespace mount copied from the machine's
// namespace: the copies would keep other tests' namespaces (and their
// veths) alive after those tests delete them.
func releaseCopiedMounts(t *testing.T) {
	t.Helper()
	for range 16 {
		if err := unix.Unmount(netns.RunDir, unix.MNT_DETACH); err != nil {
			break
		}
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		i := strings.Index(sc.Text(), " - ")
		if len(fields) < 5 || i < 0 || !strings.HasPrefix(sc.Text()[i+3:], "nsfs ") {
			continue
		}
		// Paths with escaped characters are not namespace files of tests.
		if err := unix.Unmount(fields[4], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			t.Logf("netnstest: unmount copied %s: %v", fields[4], err)
		}
	}
	if err := unix.Mount("", netns.RunDir, "", unix.MS_SHARED, ""); !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		t.Fatalf("netnstest: %s is still a mount point in the private mount namespace (%v)", netns.RunDir, err)
	}
}

// IPNetnsAdd runs `ip netns add` for a namespace named after prefix that
// is not prefix's own (no "<prefix>-"): another program's namespace, as
// far as envgate is concerned. A cleanup deletes it unless the test did.
// A second call for prefix needs the first one's namespace deleted.
func IPNetnsAdd(t testing.TB, prefix string) string {
	t.Helper()
	name := foreignName(prefix)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(netns.RunDir, name)); errors.Is(err, os.ErrNotExist) {
			return // deleted by the test
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	return name
}

// foreignName is the name IPNetnsAdd uses for prefix.
func foreignName(prefix string) string { return prefix + "ip" }

// removeForeign removes the file of prefix's IPNetnsAdd namespace that a
// killed test process left (its mount died with the process's private
// mount namespace).
func removeForeign(prefix string) {
	os.Remove(filepath.Join(netns.RunDir, foreignName(prefix)))
}

// tellParent records prefix for the parent of a child that
// InPrivateMountNamespace started.
func tellParent(t testing.TB, prefix string) {
	dir := os.Getenv(prefixesEnv)
	if dir == "" {
		return
	}
	if err := os.WriteFile(filepath.Join(dir, prefix), nil, 0o644); err != nil {
		t.Fatalf("netnstest: %v", err)
	}
}
