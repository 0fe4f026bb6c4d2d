package netns_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
	"golang.org/x/sys/unix"
)

// mountsSeenIn runs a shell in sb with a mount namespace of its own and
// returns its working directory and its mount points with their fs types.
func mountsSeenIn(t *testing.T, sb *netns.Sandbox) (wd string, mounts map[string]string) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", "pwd; cat /proc/self/mountinfo")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := sb.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v: %s", err, out.Bytes())
	}
	sc := bufio.NewScanner(&out)
	sc.Scan()
	wd = sc.Text()
	mounts = map[string]string{}
	for sc.Scan() {
		// id parent major:minor root point options ... - fstype source super
		f := strings.Fields(sc.Text())
		for i, x := range f {
			if x == "-" && i+1 < len(f) && len(f) > 4 {
				mounts[f[4]] = f[i+1]
			}
		}
	}
	return wd, mounts
}

// A process started with a mount namespace of its own gets a copy of the
// base mount namespace: no namespace mount of any sandbox (only an empty
// tmpfs on RunDir), the gateway's working directory, and what the host
// mounts after the base was made, as a slave.
func TestNewMountNamespaceHoldsNoSandboxMounts(t *testing.T) {
	if !netnstest.InPrivateMountNamespace(t) {
		return // the parent: the child ran the test
	}
	// A fresh process: the base is made below, after this shared mount,
	// so that the base holds a slave copy of it.
	shared := t.TempDir()
	if err := unix.Mount(shared, shared, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(shared, unix.MNT_DETACH) })
	if err := unix.Mount("", shared, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}

	m := newManager(t)
	sbs := []*netns.Sandbox{create(t, m, "a"), create(t, m, "b"), create(t, m, "c")}
	wd, mounts := mountsSeenIn(t, sbs[0])
	if want, _ := os.Getwd(); wd != want {
		t.Errorf("working directory %q, want the gateway's %q", wd, want)
	}
	if fs := mounts[netns.RunDir]; fs != "tmpfs" {
		t.Errorf("%s is %q in the child, want the base's empty tmpfs", netns.RunDir, fs)
	}
	for p, fs := range mounts {
		if strings.HasPrefix(p, netns.RunDir+"/") {
			t.Errorf("the child holds a namespace mount %s (%s)", p, fs)
		}
	}
	// The host's view is unchanged.
	for _, sb := range sbs {
		if err := unix.Access(sb.Path(), unix.F_OK); err != nil {
			t.Errorf("%s: %v", sb.Path(), err)
		}
	}

	// A mount the host makes now reaches the base, and the next child.
	later := filepath.Join(shared, "later")
	if err := os.Mkdir(later, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", later, "tmpfs", 0, "size=4k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(later, unix.MNT_DETACH) })
	if _, mounts := mountsSeenIn(t, sbs[1]); mounts[later] != "tmpfs" {
		t.Errorf("a mount the host made after the base (%s) is missing in the child: %v", later, mounts)
	}
	// And so does a sandbox made after the base: the child sees none.
	d := create(t, m, "d")
	if _, mounts := mountsSeenIn(t, d); mounts[filepath.Join(netns.RunDir, d.Name)] != "" {
		t.Errorf("the child of %s sees its namespace mount", d.Name)
	}
}

// BenchmarkStartNewMountNS starts /bin/true with a mount namespace of its
// own while n sandboxes (1 or 1,000) are live, side by side: forked by the
// spawner (spawner.go) from the base mount namespace, from a thread of its
// own in the base mount namespace (before the spawner), or (the old way)
// from the gateway's own mount namespace. Each live sandbox holds a
// descriptor of the process, which a fork copies and an exec closes, but
// for the spawner's.
func BenchmarkStartNewMountNS(b *testing.B) {
	netnstest.RequireRoot(b)
	prefix := netnstest.Prefix(b)
	m, err := netns.New(netns.Config{Prefix: prefix, Pool: netnstest.Pool(0)})
	if err != nil {
		b.Fatal(err)
	}
	var sbs []*netns.Sandbox
	b.Cleanup(func() {
		if err := m.DestroyAll(sbs); err != nil {
			b.Error(err)
		}
		m.Settle(b.Context())
	})
	// The one the processes start in, then the others.
	live := 0
	for _, n := range []int{1, 1000} {
		for ; live < n; live++ {
			sb, err := m.Create(b.Context(), fmt.Sprint("l", live))
			if err != nil {
				b.Fatal(err)
			}
			sbs = append(sbs, sb)
		}
		for _, mode := range []string{"spawner", "thread", "host"} {
			b.Run(fmt.Sprintf("live=%d/from=%s", n, mode), func(b *testing.B) {
				defer func(v, w bool) { *netns.UseBaseMountNS, *netns.UseSpawner = v, w }(*netns.UseBaseMountNS, *netns.UseSpawner)
				*netns.UseBaseMountNS, *netns.UseSpawner = mode != "host", mode == "spawner"
				for b.Loop() {
					cmd := exec.Command("/bin/true")
					cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID}
					if err := sbs[0].Start(cmd); err != nil {
						b.Fatal(err)
					}
					if err := cmd.Wait(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
