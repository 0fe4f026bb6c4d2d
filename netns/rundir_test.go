package netns_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// leftovers lists what of prefix remains: namespace files in RunDir,
// mounts at or under them, and host links.
func leftovers(t *testing.T, prefix string) (files, mounts, links []string) {
	t.Helper()
	files, _ = filepath.Glob(filepath.Join(netns.RunDir, prefix+"-*"))
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], netns.RunDir+"/"+prefix+"-") {
			mounts = append(mounts, fields[4])
		}
	}
	all, err := netlink.LinkList()
	for i := 0; errors.Is(err, netlink.ErrDumpInterrupted) && i < 50; i++ {
		all, err = netlink.LinkList() // links of other tests changed meanwhile
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range all {
		if strings.HasPrefix(l.Attrs().Name, prefix+"-") {
			links = append(links, l.Attrs().Name)
		}
	}
	return files, mounts, links
}

// requireNothingLeft fails t if anything of m's prefix remains, once the
// kernel has removed the veths of the deleted namespaces.
func requireNothingLeft(t *testing.T, m *netns.Manager) {
	t.Helper()
	settle(t, m)
	if files, mounts, links := leftovers(t, m.Prefix()); len(files)+len(mounts)+len(links) > 0 {
		t.Fatalf("left behind: namespace files %v, mounts %v, links %v", files, mounts, links)
	}
}

// settle waits (bounded) until the veths of destroyed sandboxes are gone.
func settle(t *testing.T, m *netns.Manager) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := m.Settle(ctx); err != nil {
		t.Errorf("settle: %v", err)
	}
}

// requireNamespace fails t unless name in RunDir is a mounted network
// namespace (another program's, which envgate must leave working).
func requireNamespace(t *testing.T, name string) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Join(netns.RunDir, name), &st); err != nil || st.Type != unix.NSFS_MAGIC {
		t.Fatalf("%s is no longer a mounted namespace (statfs type %#x, %v)", name, st.Type, err)
	}
}

// TestIPNetnsAddDoesNotHideSandboxes is issue 10, item 3, at the package
// level: `ip netns add` run while sandboxes exist, on a machine where
// RunDir is not a mount point yet, turns RunDir into one. Sandboxes made
// before and after it are destroyed and collected completely, and the
// other program's namespace keeps working.
func TestIPNetnsAddDoesNotHideSandboxes(t *testing.T) {
	if !netnstest.InPrivateMountNamespace(t) {
		return
	}
	m := newManager(t)
	ctx := context.Background()
	var sbs []*netns.Sandbox
	for _, id := range []string{"a", "b", "c"} {
		sb, err := m.Create(ctx, id)
		if err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
		t.Cleanup(func() { m.Destroy(sb) })
		sbs = append(sbs, sb)
	}
	foreign := netnstest.IPNetnsAdd(t, m.Prefix())
	sb, err := m.Create(ctx, "d")
	if err != nil {
		t.Fatalf("create d after ip netns add: %v", err)
	}
	t.Cleanup(func() { m.Destroy(sb) })
	sbs = append(sbs, sb)

	for _, sb := range sbs {
		if err := m.Destroy(sb); err != nil {
			t.Errorf("destroy %s: %v", sb.Name, err)
		}
	}
	settle(t, m)
	left, err := m.GC(nil)
	if err != nil || !left.Empty() {
		t.Errorf("gc after destroy: %+v, %v; want nothing", left, err)
	}
	requireNothingLeft(t, m)
	requireNamespace(t, foreign)
}

// TestGCRevealsHiddenNamespaces: what a run without the fix left behind
// (namespace mounts under a later, recursive bind of RunDir, as `ip netns
// add` makes when RunDir is no mount point) is found and removed by GC,
// once no other program's namespace is in the layer above them; while one
// is, GC says so with ErrHidden and leaves that layer alone.
func TestGCRevealsHiddenNamespaces(t *testing.T) {
	if !netnstest.InPrivateMountNamespace(t) {
		return
	}
	m := newManager(t)
	for _, id := range []string{"a", "b"} {
		sb, err := m.Create(context.Background(), id)
		if err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
		sb.Close() // left behind, as by a run that crashed
	}
	// The lower layer, private, as the directory was under a private /;
	// then what iproute2 does when RunDir is no mount point.
	for _, step := range []struct {
		source string
		flags  uintptr
	}{
		{"", unix.MS_PRIVATE},
		{netns.RunDir, unix.MS_BIND | unix.MS_REC},
		{"", unix.MS_SHARED | unix.MS_REC},
	} {
		if err := unix.Mount(step.source, netns.RunDir, "none", step.flags, ""); err != nil {
			t.Fatalf("mount %#x: %v", step.flags, err)
		}
	}
	foreign := netnstest.IPNetnsAdd(t, m.Prefix())

	// A new run of the same instance.
	m2, err := netns.New(netns.Config{Prefix: m.Prefix(), Pool: netnstest.Pool(0)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m2.GC(nil); !errors.Is(err, netns.ErrHidden) || !strings.Contains(err.Error(), foreign) {
		t.Errorf("gc with another program's namespace above ours: %v; want ErrHidden naming %s", err, foreign)
	}
	requireNamespace(t, foreign)

	if out, err := exec.Command("ip", "netns", "del", foreign).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v\n%s", foreign, err, out)
	}
	left, err := m2.GC(nil)
	if err != nil {
		t.Errorf("gc: %v", err)
	}
	if len(left.Namespaces) != 2 {
		t.Errorf("gc removed %v, want the 2 hidden namespaces", left.Namespaces)
	}
	requireNothingLeft(t, m2)
	// RunDir is usable again, and stays so after another ip netns add.
	sb, err := m2.Create(context.Background(), "c")
	if err != nil {
		t.Fatalf("create after gc: %v", err)
	}
	netnstest.IPNetnsAdd(t, m.Prefix())
	if err := m2.Destroy(sb); err != nil {
		t.Errorf("destroy: %v", err)
	}
	requireNothingLeft(t, m2)
}
