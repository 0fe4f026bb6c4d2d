package netns_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
	"github.com/vishvananda/netlink"
)

func newManager(t testing.TB) *netns.Manager {
	t.Helper()
	prefix := netnstest.Prefix(t)
	m, err := netns.New(netns.Config{Prefix: prefix, Pool: netnstest.Pool(0)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func create(t testing.TB, m *netns.Manager, id string) *netns.Sandbox {
	t.Helper()
	sb, err := m.Create(context.Background(), id)
	if err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
	t.Cleanup(func() {
		if err := m.Destroy(sb); err != nil {
			t.Errorf("destroy %s: %v", id, err)
		}
	})
	return sb
}

// listenIn opens a TCP listener inside sb on port and serves one-line
// greetings naming who until the test ends.
func listenIn(t testing.TB, sb *netns.Sandbox, port int, who string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := sb.Do(func() (err error) {
		ln, err = net.Listen("tcp", ":"+strconv.Itoa(port))
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", sb.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	serveGreetings(ln, who)
	return ln
}

// serveGreetings answers every connection ln accepts with the line who
// and closes it, until ln is closed.
func serveGreetings(ln net.Listener, who string) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", who)
			c.Close()
		}
	}()
}

func readGreeting(c net.Conn) (string, error) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 64)
	n, err := c.Read(b)
	return string(b[:n]), err
}

// startIn starts argv inside sb; the returned channel is closed when the
// process has been waited for. The process is killed when the test ends.
func startIn(t *testing.T, sb *netns.Sandbox, argv ...string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := sb.Start(cmd); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("%s (pid %d) not reaped 30s after SIGKILL", argv[0], cmd.Process.Pid)
		}
	})
	return cmd, done
}

func TestCreateReachDestroy(t *testing.T) {
	m := newManager(t)
	sb := create(t, m, "feature-x")

	if _, err := os.Stat("/run/netns/" + sb.Name); err != nil {
		t.Fatalf("namespace not visible to ip netns: %v", err)
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil || !containsLine(string(out), sb.Name) {
		t.Fatalf("ip netns list does not show %s: %s %v", sb.Name, out, err)
	}
	host, err := netlink.LinkByName(sb.HostIf)
	if err != nil {
		t.Fatalf("host end %s: %v", sb.HostIf, err)
	}
	if host.Attrs().OperState == netlink.OperDown {
		t.Errorf("host end %s is down", sb.HostIf)
	}
	// Route to the env's address exists before we send anything.
	routes, err := netlink.RouteGet(sb.Addr().AsSlice())
	if err != nil || len(routes) == 0 || routes[0].LinkIndex != host.Attrs().Index {
		t.Fatalf("no route to %s via %s: %v %v", sb.Addr(), sb.HostIf, routes, err)
	}
	ln := listenIn(t, sb, 3000, "hello from feature-x")
	c, err := net.DialTimeout("tcp", net.JoinHostPort(sb.Addr().String(), "3000"), 5*time.Second)
	if err != nil {
		t.Fatalf("dial env from host: %v", err)
	}
	if got, _ := readGreeting(c); got != "hello from feature-x\n" {
		t.Fatalf("greeting = %q", got)
	}
	// This process's sockets in the namespace would keep it alive past
	// Destroy (a dev server's die with it), and the veth with it.
	ln.Close()
	c.Close()

	if err := m.Destroy(sb); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	if err := m.Destroy(sb); err != nil {
		t.Fatalf("second destroy is not idempotent: %v", err)
	}
	if _, err := os.Stat("/run/netns/" + sb.Name); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace file still there: %v", err)
	}
	// The kernel removes the veth with the namespace, shortly after.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Settle(ctx); err != nil {
		t.Fatalf("settle: %v", err)
	}
	if _, err := netlink.LinkByName(sb.HostIf); err == nil {
		t.Errorf("host end %s survived destroy", sb.HostIf)
	}
	if n := m.Pool().InUse(); n != 0 {
		t.Errorf("pool still has %d slots in use", n)
	}
}

func containsLine(out, name string) bool {
	for _, f := range splitFields(out) {
		if f == name {
			return true
		}
	}
	return false
}

func splitFields(s string) []string {
	var out []string
	field := ""
	for _, r := range s {
		if r == ' ' || r == '\n' || r == '\t' {
			if field != "" {
				out = append(out, field)
			}
			field = ""
			continue
		}
		field += string(r)
	}
	if field != "" {
		out = append(out, field)
	}
	return out
}

// Two sandboxes listen on the same port; from inside A, B is unreachable.
func TestIsolation(t *testing.T) {
	m := newManager(t)
	a := create(t, m, "env-a")
	b := create(t, m, "env-b")
	listenIn(t, a, 3000, "a")
	listenIn(t, b, 3000, "b")
	for _, sb := range []*netns.Sandbox{a, b} {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(sb.Addr().String(), "3000"), 5*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", sb.ID, err)
		}
		want := sb.ID[len("env-"):] + "\n"
		if got, _ := readGreeting(c); got != want {
			t.Errorf("%s answered %q, want %q", sb.ID, got, want)
		}
	}
	var dialErr error
	err := a.Do(func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(b.Addr().String(), "3000"), time.Second)
		if err == nil {
			c.Close()
		}
		dialErr = err
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if dialErr == nil {
		t.Fatal("a process in env-a reached env-b's address")
	}
	if !errors.Is(dialErr, syscall.ENETUNREACH) {
		t.Logf("dial from a to b failed with %v (want network unreachable, any failure isolates)", dialErr)
	}
}

func TestStartInsideAndDestroyKills(t *testing.T) {
	m := newManager(t)
	sb := create(t, m, "proc")
	cmd, waited := startIn(t, sb, "sleep", "1000")

	inside, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Readlink("/proc/self/ns/net")
	if inside == self {
		t.Fatalf("process runs in the gateway's namespace %s", self)
	}
	pids, err := netns.PidsIn(sb.Path())
	if err != nil || len(pids) != 1 || pids[0] != cmd.Process.Pid {
		t.Fatalf("PidsIn = %v, %v; want [%d]", pids, err, cmd.Process.Pid)
	}
	// This goroutine's own thread must still be in the root namespace.
	if now, _ := os.Readlink("/proc/thread-self/ns/net"); now != self {
		t.Fatalf("calling thread left in %s", now)
	}
	if err := m.Destroy(sb); err != nil {
		t.Fatal(err)
	}
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("process inside survived destroy")
	}
}

func TestGCRemovesLeftoversOfOwnPrefixOnly(t *testing.T) {
	crashed := newManager(t)
	other := newManager(t)
	keep := create(t, other, "other-instance")

	sb, err := crashed.Create(context.Background(), "left-behind")
	if err != nil {
		t.Fatal(err)
	}
	_, waited := startIn(t, sb, "sleep", "1000")
	sb.Close() // the crashed process's handle went with it

	// A fresh manager of the crashed instance, as at start-up.
	restarted, err := netns.New(netns.Config{Prefix: crashed.Prefix(), Pool: netnstest.Pool(0)})
	if err != nil {
		t.Fatal(err)
	}
	left, err := restarted.GC(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(left.Namespaces) != 1 || left.Processes != 1 {
		t.Fatalf("gc removed %+v, want the one namespace and its process", left)
	}
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("leftover process survived gc")
	}
	if _, err := netlink.LinkByName(sb.HostIf); err == nil {
		t.Errorf("leftover veth %s survived gc", sb.HostIf)
	}
	if _, err := os.Stat(keep.Path()); err != nil {
		t.Fatalf("gc of one prefix removed another's namespace: %v", err)
	}
	if _, err := netlink.LinkByName(keep.HostIf); err != nil {
		t.Fatalf("gc of one prefix removed another's veth: %v", err)
	}
}

func TestAdopt(t *testing.T) {
	m := newManager(t)
	sb := create(t, m, "adoptee")
	listenIn(t, sb, 3000, "still here")

	again, err := netns.New(netns.Config{Prefix: m.Prefix(), Pool: netnstest.Pool(0)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := again.Adopt("adoptee")
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if got.Slot != sb.Slot || got.HostIf != sb.HostIf {
		t.Fatalf("adopted %+v, want %+v", got, sb)
	}
	left, err := again.GC(map[string]bool{"adoptee": true})
	if err != nil || !left.Empty() {
		t.Fatalf("gc with the adoptee kept removed %+v, %v", left, err)
	}
	next, err := again.Pool().Allocate(nil)
	if err != nil || next.Index == sb.Slot.Index {
		t.Fatalf("pool handed out the adopted slot again: %+v %v", next, err)
	}
}

func TestConcurrentCreatesGetDistinctSlots(t *testing.T) {
	m := newManager(t)
	const n = 16
	sbs := make([]*netns.Sandbox, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { sbs[i], errs[i] = m.Create(context.Background(), fmt.Sprintf("c%d", i)) })
	}
	wg.Wait()
	seen := map[int]bool{}
	for i, sb := range sbs {
		if errs[i] != nil {
			t.Errorf("create %d: %v", i, errs[i])
			continue
		}
		t.Cleanup(func() { m.Destroy(sb) })
		if seen[sb.Slot.Index] {
			t.Errorf("slot %d handed out twice", sb.Slot.Index)
		}
		seen[sb.Slot.Index] = true
	}
}

func TestCreateTwiceFailsAndLeaksNothing(t *testing.T) {
	m := newManager(t)
	first := create(t, m, "dup")
	listenIn(t, first, 3000, "first")
	_, waited := startIn(t, first, "sleep", "1000")
	if _, err := m.Create(context.Background(), "dup"); err == nil {
		t.Fatal("second create of the same id succeeded")
	}
	// The failed Create must not have touched the live sandbox of that ID.
	select {
	case <-waited:
		t.Fatal("a failed Create killed the process of the existing sandbox")
	default:
	}
	c, err := net.DialTimeout("tcp", net.JoinHostPort(first.Addr().String(), "3000"), 5*time.Second)
	if err != nil {
		t.Fatalf("existing sandbox unreachable after a failed Create: %v", err)
	}
	if got, _ := readGreeting(c); got != "first\n" {
		t.Fatalf("greeting %q", got)
	}
	if n := m.Pool().InUse(); n != 1 {
		t.Fatalf("failed create kept its slot: %d in use, want 1", n)
	}
	links, _ := netlink.LinkList()
	count := 0
	for _, l := range links {
		if len(l.Attrs().Name) > len(m.Prefix()) && l.Attrs().Name[:len(m.Prefix())+1] == m.Prefix()+"-" {
			count++
		}
	}
	if count != 1 {
		t.Fatalf("%d host links with the prefix, want 1", count)
	}
}

func TestCreateRejectsBadID(t *testing.T) {
	m := newManager(t)
	for _, id := range []string{"", "A", "a_b", "-a", "a.b", "../x"} {
		if _, err := m.Create(context.Background(), id); err == nil {
			t.Errorf("Create(%q) succeeded", id)
		}
	}
}

// TestDestroyTwiceLeavesTheSlotsNextSandboxAlone: a second Destroy of a
// sandbox whose slot went to a new sandbox must not touch the new one's
// veth or free its slot.
func TestDestroyTwiceLeavesTheSlotsNextSandboxAlone(t *testing.T) {
	// A pool of 4 slots (the top /28 of this package's block), so that
	// old's slot comes round again soon.
	block := netnstest.Pool(0)
	top := netip.PrefixFrom(block.Addr(), block.Bits()).Masked()
	a := top.Addr().As4()
	a[2] |= 0x0f
	a[3] = 0xf0
	m, err := netns.New(netns.Config{Prefix: netnstest.Prefix(t), Pool: netip.PrefixFrom(netip.AddrFrom4(a), 28)})
	if err != nil {
		t.Fatal(err)
	}
	old, err := m.Create(context.Background(), "old")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Destroy(old); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	// Take every slot up to and including old's, so one has old's veth name.
	var made []*netns.Sandbox
	for i := 0; ; i++ {
		sb := create(t, m, "new"+strconv.Itoa(i))
		made = append(made, sb)
		if sb.HostIf == old.HostIf {
			break
		}
		if i > 4 {
			t.Fatalf("slot of %s never came round again", old.HostIf)
		}
	}
	again := made[len(made)-1]
	if err := m.Destroy(old); err != nil {
		t.Fatalf("second destroy: %v", err)
	}
	if err := m.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(again.HostIf); err != nil {
		t.Fatalf("the new sandbox's veth %s is gone after the old one's second destroy: %v", again.HostIf, err)
	}
	if n := m.Pool().InUse(); n != len(made) {
		t.Fatalf("%d slots in use, want %d", n, len(made))
	}
}
