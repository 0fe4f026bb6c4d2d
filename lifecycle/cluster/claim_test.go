package cluster_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle/cluster"
	"github.com/envgate/envgate/lifecycle/cluster/clustertest"
	"github.com/envgate/envgate/netns/netnstest/wait"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// testNode starts node name of cluster "c" on te; lost records what it
// was told to stop.
type testNode struct {
	*cluster.Node
	mu   sync.Mutex
	lost []string
}

// opts adjust the node's config before it starts.
func startNode(t *testing.T, te *clustertest.Etcd, name, fenceDir string, opts ...func(*cluster.Config)) *testNode {
	t.Helper()
	tn := &testNode{}
	cfg := cluster.Config{
		Endpoints: []string{te.Endpoint},
		Name:      "c",
		Node:      name,
		Advertise: advertise(name),
		FenceDir:  fenceDir,
		// Each test node says it has 512 MiB left, over a 64 MiB floor.
		MemAvailable:    func() int64 { return 512 << 20 },
		MinMemAvailable: 64 << 20,
		Lost: func(envs []string) {
			tn.mu.Lock()
			tn.lost = append(tn.lost, envs...)
			tn.mu.Unlock()
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	n, err := cluster.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tn.Node = n
	n.Start()
	t.Cleanup(func() { n.Close() })
	// Registered: its own member key is in its view.
	waitFor(t, name+" registered", func() bool {
		for _, m := range n.Members() {
			if m.Node == name {
				return true
			}
		}
		return false
	})
	return tn
}

// advertise is the address test node name advertises (nothing listens).
func advertise(name string) string { return name + ".node.invalid:1" }

// waitFor fails the test if cond does not hold within 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.For(t, 10*time.Second, what, cond)
}

func ownerKey(t *testing.T, cli *clientv3.Client, env string) (string, int64) {
	t.Helper()
	resp, err := cli.Get(context.Background(), "/envgate/c/envs/"+env)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].ModRevision
}

// TestLive: a node counts another's address live while that node's
// session lasts (a TCP hop waits for it that long), and not once the
// session has ended; its own address, or one no node has, never.
func TestLive(t *testing.T) {
	te := clustertest.Start(t)
	fence := t.TempDir()
	a := startNode(t, te, "a", fence)
	b := startNode(t, te, "b", fence)
	waitFor(t, "b sees a live", func() bool { return b.Live(advertise("a")) })
	if b.Live(advertise("b")) || b.Live("127.0.0.1:9") {
		t.Errorf("b counts live: its own address %v, an address no node has %v", b.Live(advertise("b")), b.Live("127.0.0.1:9"))
	}
	a.Close() // ends its session
	waitFor(t, "b sees a's session end", func() bool { return !b.Live(advertise("a")) })
}

// TestMembersCarryMemory: each node publishes its available memory and
// floor with its capacity, and the other nodes see them in their member
// list.
func TestMembersCarryMemory(t *testing.T) {
	te := clustertest.Start(t)
	fence := t.TempDir()
	startNode(t, te, "a", fence)
	b := startNode(t, te, "b", fence)
	waitFor(t, "b sees a's memory", func() bool {
		for _, m := range b.Members() {
			if m.Node == "a" {
				return m.MemAvailable == 512<<20 && m.MinMemAvailable == 64<<20
			}
		}
		return false
	})
}

// TestClaimRelease: a start claims its env (the owner key's revision is
// the token, recorded in the fence dir); another node's claim is refused;
// a release with a stale token leaves the key, with the right token
// deletes it, and is no loss; the next claim gets a newer token.
func TestClaimRelease(t *testing.T) {
	te := clustertest.Start(t)
	cli := te.Client(t)
	fence := t.TempDir()
	a := startNode(t, te, "a", fence)
	b := startNode(t, te, "b", fence)
	ctx := context.Background()

	tok, err := a.Claim(ctx, "e1")
	if err != nil {
		t.Fatal(err)
	}
	if node, rev := ownerKey(t, cli, "e1"); node != "a" || rev != tok {
		t.Fatalf("owner key of e1: %q at %d; want a at %d", node, rev, tok)
	}
	if b, _ := os.ReadFile(filepath.Join(fence, "e1.token")); string(b) != itoa(tok)+"\n" {
		t.Errorf("fence token file holds %q, want %d", b, tok)
	}
	// Claimed again while owned: the same token, from the cache.
	if again, err := a.Claim(ctx, "e1"); err != nil || again != tok {
		t.Errorf("second claim by a: %d, %v; want %d", again, err, tok)
	}
	waitFor(t, "b sees a's claim", func() bool { n, _, ok := b.Owner("e1"); return ok && n == "a" })
	if _, err := b.Claim(ctx, "e1"); !errors.Is(err, cluster.ErrElsewhere) {
		t.Errorf("b's claim of a's env: %v, want ErrElsewhere", err)
	}

	a.Release("e1", tok-1) // not the key's revision
	if node, rev := ownerKey(t, cli, "e1"); node != "a" || rev != tok {
		t.Fatalf("a stale release deleted the owner key (now %q at %d)", node, rev)
	}
	a.Release("e1", tok)
	tok2, err := a.Claim(ctx, "e1") // waits for the release
	if err != nil {
		t.Fatal(err)
	}
	if tok2 <= tok {
		t.Errorf("claim after the release: token %d, want > %d", tok2, tok)
	}
	if node, rev := ownerKey(t, cli, "e1"); node != "a" || rev != tok2 {
		t.Fatalf("owner key after the new claim: %q at %d; want a at %d", node, rev, tok2)
	}
	// The release's delete event, seen after the new claim, is no loss.
	waitFor(t, "b sees the new claim", func() bool { _, r, ok := b.Owner("e1"); return ok && r == tok2 })
	if _, r, ok := a.Owner("e1"); !ok || r != tok2 {
		t.Errorf("a's cache after the new claim: token %d (%v), want %d", r, ok, tok2)
	}

	a.Release("e1", tok2)
	waitFor(t, "the key released", func() bool { n, _ := ownerKey(t, cli, "e1"); return n == "" })
	waitFor(t, "b sees the release", func() bool { _, _, ok := b.Owner("e1"); return !ok })
	// Free again: b may take it, with a newer token still.
	tok3, err := b.Claim(ctx, "e1")
	if err != nil || tok3 <= tok2 {
		t.Fatalf("b's claim after a's release: %d, %v; want a token > %d", tok3, err, tok2)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.lost) != 0 {
		t.Errorf("a was told to stop %v: a release is no loss", a.lost)
	}
}

// TestClaimFenced: a node whose token is older than the one recorded on
// the env's data dir may not start it.
func TestClaimFenced(t *testing.T) {
	te := clustertest.Start(t)
	fence := t.TempDir()
	a := startNode(t, te, "a", fence)
	if err := cluster.Fence(fence, "e1", 1<<40); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Claim(context.Background(), "e1"); !errors.Is(err, cluster.ErrFenced) {
		t.Fatalf("claim under a newer recorded token: %v, want ErrFenced", err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
