package main

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/envgate/envgate/netns"
	"github.com/google/nftables"
)

// TestFirewallLifetime: serve installs the instance's table; after
// SIGTERM, and after SIGKILL plus `envgate gc`, it is gone, a foreign
// table holding a drop policy is untouched, and net.ipv4.ip_forward is as
// it was before envgate started (unless another envgate on the machine
// still keeps it on).
func TestFirewallLifetime(t *testing.T) {
	instance, cfg, addr := testInstance(t, 6, "")
	table := netns.TableName(instance)
	foreign := &nftables.Table{Name: "foreign-" + instance, Family: nftables.TableFamilyINet}
	cc := &nftables.Conn{}
	cc.AddTable(foreign)
	drop := nftables.ChainPolicyDrop
	cc.AddChain(&nftables.Chain{Name: "forward", Table: foreign, Hooknum: nftables.ChainHookForward,
		Priority: nftables.ChainPriorityFilter, Type: nftables.ChainTypeFilter, Policy: &drop})
	if err := cc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.DelTable(foreign); cc.Flush() })
	forward := func() string {
		b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		return strings.TrimSpace(string(b))
	}
	before := forward()
	t.Cleanup(func() {
		if forward() != before {
			os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(before), 0o644)
		}
	})
	has := func(name string) bool {
		out, _ := exec.Command("nft", "list", "tables").Output()
		return strings.Contains(string(out), " "+name+"\n")
	}
	othersGuard := func() bool {
		out, _ := exec.Command("nft", "list", "chains").Output()
		return strings.Contains(string(out), "chain guard")
	}
	check := func(when string) {
		t.Helper()
		if has(table) {
			t.Errorf("%s: table %s remains", when, table)
		}
		if !has(foreign.Name) {
			t.Errorf("%s: foreign table %s removed", when, foreign.Name)
		}
		if now := forward(); now != before && !othersGuard() {
			t.Errorf("%s: ip_forward = %s, was %s", when, now, before)
		}
	}

	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		g := startServe(t, cfg, addr)
		if code, _, _ := g.get(t, "fw.localhost", "/healthz"); code != 200 {
			t.Fatalf("status %d through the firewall", code)
		}
		if !has(table) {
			t.Fatalf("serving, but no table %s", table)
		}
		// The listener's port is in the set its traffic skips
		// connection tracking by (netns tests what that does).
		_, port, _ := strings.Cut(addr, ":")
		if out, err := exec.Command("nft", "list", "set", "inet", table, "listeners").CombinedOutput(); err != nil ||
			!strings.Contains(string(out), "elements = { "+port+" }") {
			t.Errorf("listener port %s not in set listeners (%v):\n%s", port, err, out)
		}
		if forward() != "1" {
			t.Errorf("serving envs with egress, but ip_forward is off")
		}
		g.stop(t, sig)
		if sig == syscall.SIGKILL {
			if !has(table) {
				t.Errorf("table gone after SIGKILL: nothing left for gc to test")
			}
			if out, err := exec.Command(envgateBinary(t), "gc", "--config", cfg).CombinedOutput(); err != nil {
				t.Fatalf("envgate gc: %v\n%s", err, out)
			}
		}
		check("after " + sig.String())
	}
}
