package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle/cluster"
	"github.com/envgate/envgate/lifecycle/cluster/clustertest"
	"github.com/envgate/envgate/netns/netnstest/wait"
)

// TestEtcdTLS: cluster.etcd's ca_file, cert_file and key_file reach an
// etcd that serves TLS only and admits only clients with a certificate
// from its CA: a node with them registers and claims an env; one with
// the CA but no client certificate is turned away and never registers.
func TestEtcdTLS(t *testing.T) {
	te := clustertest.StartTLS(t)
	cli := te.Client(t)
	fence := t.TempDir()
	a := startNode(t, te, "a", fence, func(c *cluster.Config) {
		c.CAFile, c.CertFile, c.KeyFile = te.CAFile, te.CertFile, te.KeyFile
	})
	tok, err := a.Claim(context.Background(), "e1")
	if err != nil {
		t.Fatal(err)
	}
	if node, rev := ownerKey(t, cli, "e1"); node != "a" || rev != tok {
		t.Errorf("owner key of e1 over TLS: %q at %d; want a at %d", node, rev, tok)
	}

	n, err := cluster.New(cluster.Config{
		Endpoints: []string{te.Endpoint}, CAFile: te.CAFile,
		Name: "c", Node: "nocert", Advertise: advertise("nocert"), FenceDir: fence, Lost: func([]string) {},
	})
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	t.Cleanup(func() { n.Close() })
	if wait.Until(3*time.Second, func() bool {
		for _, m := range a.Members() {
			if m.Node == "nocert" {
				return true
			}
		}
		return len(n.Members()) > 0
	}) {
		t.Errorf("a node without a client certificate registered: a sees %+v, it sees %+v", a.Members(), n.Members())
	}
}
