package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/envgate/envgate/lifecycle/cluster"
	"github.com/envgate/envgate/lifecycle/cluster/clustertest"
)

// TestPlace: where a request for an env goes, through real nodes on a
// real etcd. An env a node owns is served there; one another live node
// owns is forwarded to it, but a request forwarded once already (hopped)
// is never sent on: it gets ErrElsewhere, so nodes whose views differ
// cannot bounce it between them. An env nobody owns goes to the
// rendezvous choice among the live nodes with room: a node that forwards
// it claims nothing, and the node the hop lands on claims it. A full
// node (max_envs reached) is passed over; with no room anywhere, ErrNoRoom.
func TestPlace(t *testing.T) {
	te := clustertest.Start(t)
	cli := te.Client(t)
	fence := t.TempDir()
	a := startNode(t, te, "a", fence)
	b := startNode(t, te, "b", fence)
	// c takes one env at most.
	c := startNode(t, te, "c", fence, func(cfg *cluster.Config) { cfg.MaxEnvs = 1 })
	ctx := context.Background()
	waitFor(t, "every node to see the three", func() bool {
		return len(a.Members()) == 3 && len(b.Members()) == 3 && len(c.Members()) == 3
	})

	// Owned by a: served on a, forwarded to a once, never on.
	if _, err := a.Claim(ctx, "owned"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to see a's claim", func() bool { n, _, ok := b.Owner("owned"); return ok && n == "a" })
	for _, hopped := range []bool{false, true} {
		if addr, err := a.Place(ctx, "owned", hopped); addr != "" || err != nil {
			t.Errorf("a.Place(owned, hopped %v): %q, %v; want served on a", hopped, addr, err)
		}
	}
	if addr, err := b.Place(ctx, "owned", false); addr != advertise("a") || err != nil {
		t.Errorf("b.Place(owned): %q, %v; want forwarded to %s", addr, err, advertise("a"))
	}
	if addr, err := b.Place(ctx, "owned", true); addr != "" || !errors.Is(err, cluster.ErrElsewhere) {
		t.Errorf("b.Place(owned, hopped): %q, %v; want ErrElsewhere (a hop is never sent on)", addr, err)
	}

	// Unowned, placed by rendezvous: one env whose choice is b, asked of a.
	var toB string
	for i := 0; toB == ""; i++ {
		if env := fmt.Sprintf("new%d", i); mustChoose(t, env, a.Members()) == "b" {
			toB = env
		}
	}
	if addr, err := a.Place(ctx, toB, false); addr != advertise("b") || err != nil {
		t.Errorf("a.Place(%s): %q, %v; want forwarded to b, the rendezvous choice", toB, addr, err)
	}
	if n, _ := ownerKey(t, cli, toB); n != "" {
		t.Errorf("%s owned by %q after a forwarded it; want no owner key until the hop lands", toB, n)
	}
	if addr, err := b.Place(ctx, toB, true); addr != "" || err != nil {
		t.Errorf("b.Place(%s, hopped): %q, %v; want served on b", toB, addr, err)
	}
	if n, _ := ownerKey(t, cli, toB); n != "b" {
		t.Errorf("%s owned by %q after the hop landed on b; want b", toB, n)
	}
	// The same env hopped to a, whose view may not have b's claim yet:
	// a's own claim fails, and the hop is refused, not sent on.
	if addr, err := a.Place(ctx, toB, true); addr != "" || !errors.Is(err, cluster.ErrElsewhere) {
		t.Errorf("a.Place(%s, hopped) while b owns it: %q, %v; want ErrElsewhere", toB, addr, err)
	}

	// c fills up: an env whose choice would be c goes elsewhere.
	if _, err := c.Claim(ctx, "cfull"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to see c full", func() bool {
		for _, m := range a.Members() {
			if m.Node == "c" {
				return m.Running == 1
			}
		}
		return false
	})
	var toC string
	for i := 0; toC == ""; i++ {
		env := fmt.Sprintf("room%d", i)
		roomy := a.Members()
		for j := range roomy {
			roomy[j].Running = 0
		}
		if mustChoose(t, env, roomy) == "c" {
			toC = env
		}
	}
	addr, err := a.Place(ctx, toC, false)
	if err != nil || (addr != "" && addr != advertise("b")) {
		t.Errorf("a.Place(%s) with c full: %q, %v; want served on a or forwarded to b", toC, addr, err)
	}
	if addr == "" {
		if n, _ := ownerKey(t, cli, toC); n != "a" {
			t.Errorf("%s served on a, but its owner key names %q", toC, n)
		}
	}
	if n, _ := ownerKey(t, cli, toC); n == "c" {
		t.Errorf("%s placed on c, which is full", toC)
	}

	// No room anywhere: a node alone in its cluster, full.
	d := startNode(t, te, "d", fence, func(cfg *cluster.Config) { cfg.Name = "full"; cfg.MaxEnvs = 1 })
	if _, err := d.Claim(ctx, "only"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "d to publish that it is full", func() bool {
		m := d.Members()
		return len(m) == 1 && m[0].Running == 1
	})
	if addr, err := d.Place(ctx, "another", false); addr != "" || !errors.Is(err, cluster.ErrNoRoom) {
		t.Errorf("d.Place(another) with d full: %q, %v; want ErrNoRoom", addr, err)
	}
}

// mustChoose is the node Choose picks for env among members.
func mustChoose(t *testing.T, env string, members []cluster.Member) string {
	t.Helper()
	m, ok := cluster.Choose(env, members)
	if !ok {
		t.Fatalf("no member with room for %s among %+v", env, members)
	}
	return m.Node
}
