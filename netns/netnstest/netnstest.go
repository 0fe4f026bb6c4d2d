// Package netnstest gives integration tests an instance prefix of their own
// and checks, when the test ends, that nothing carrying it was left behind:
// no namespace, no host veth, no process inside. It removes what it finds,
// so a failing test does not poison the next one, and fails the test.
package netnstest

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envgate/envgate/netns"
	"github.com/vishvananda/netlink"
)

// RequireRoot skips the test when not running as root; CI runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and veth pairs (CI runs as root)")
	}
}

// Prefix returns a fresh random instance prefix and registers a cleanup,
// to run after the test's own cleanups, that fails the test if anything
// carrying the prefix remains, and removes it.
func Prefix(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := []byte{'t', 0, 0, 0, 0, 0}
	for i := 1; i < len(b); i++ {
		b[i] = letters[rand.IntN(len(letters))]
	}
	prefix := string(b)
	own(t, prefix)
	// t.Cleanup runs last-registered first, so registering now means this
	// runs after every cleanup the test registers later.
	t.Cleanup(func() { CheckClean(t, prefix) })
	return prefix
}

// CheckClean fails t if any namespace, veth, process or cgroup of prefix
// remains, then removes them.
func CheckClean(t testing.TB, prefix string) {
	t.Helper()
	m, err := netns.New(netns.Config{Prefix: prefix})
	if err != nil {
		t.Errorf("leak check: %v", err)
		return
	}
	// Host ends of destroyed sandboxes go with their namespaces, but the
	// kernel takes a moment: only what stays is a leak.
	awaitLinks(prefix, 10*time.Second)
	left, err := m.GC(nil)
	if err != nil {
		t.Errorf("leak check: gc: %v", err)
	}
	if !left.Empty() {
		t.Errorf("leaked: namespaces %v, links %v, %d processes", left.Namespaces, left.Links, left.Processes)
	}
	// The cgroups `envgate serve` makes for the instance's envs
	// (envgate/<instance>) go when it stops, and with `envgate gc`.
	if cgs := cgroupsLeft("envgate/" + prefix); len(cgs) > 0 {
		t.Errorf("leaked cgroups: %v", cgs)
		removeCgroups("envgate/" + prefix)
	}
	// A gateway the test killed leaves its firewall table for `envgate
	// gc`, as it leaves its namespaces; tests of the firewall check its
	// removal themselves. Here it only goes, with ip_forward if it
	// turned that on.
	if err := exec.Command("nft", "list", "table", "inet", netns.TableName(prefix)).Run(); err == nil {
		if err := netns.RemoveFirewall(prefix); err != nil {
			t.Errorf("leak check: %v", err)
		}
	}
}

// Pool returns the test address pool for a package: tests of different
// packages run in parallel processes, so each package takes its own block
// of 10.214.0.0/16 (block 0-15, a /20 each).
func Pool(block int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 214, byte(block * 16), 0}), 20)
}

// awaitLinks waits, up to max, until no host link of prefix remains while
// none of its namespaces does.
func awaitLinks(prefix string, max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		ns, _ := filepath.Glob(filepath.Join(netns.RunDir, prefix+"-*"))
		if len(ns) > 0 {
			return // a leak anyway; GC reports it
		}
		links, err := netlink.LinkList()
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			// Other tests' links changed during the dump: ask again.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if err != nil {
			return
		}
		found := false
		for _, l := range links {
			found = found || strings.HasPrefix(l.Attrs().Name, prefix+"-")
		}
		if !found {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
