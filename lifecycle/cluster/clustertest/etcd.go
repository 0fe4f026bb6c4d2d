// Package clustertest runs a real etcd server for tests: the embedded
// server of go.etcd.io/etcd/server/v3/embed in the test process, on
// loopback ports, its data in a temporary directory.
package clustertest

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/envgate/envgate/netns/netnstest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Etcd is a running (or stopped) test etcd.
type Etcd struct {
	cfg *embed.Config
	e   *embed.Etcd
	// Endpoint is its client URL, http://127.0.0.1:<port>.
	Endpoint string
}

// Start runs an etcd until the test ends.
func Start(t testing.TB) *Etcd {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.Name = "test"
	cfg.LogLevel = "error"
	cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", netnstest.LoopbackPort(t)))
	pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", netnstest.LoopbackPort(t)))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	te := &Etcd{cfg: cfg, Endpoint: cu.String()}
	te.Resume(t)
	t.Cleanup(te.Stop)
	return te
}

// Resume starts the server again (after Stop), on the same ports and
// data.
func (te *Etcd) Resume(t testing.TB) {
	t.Helper()
	e, err := embed.StartEtcd(te.cfg)
	if err != nil {
		t.Fatalf("etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		t.Fatal("etcd not ready after 30s")
	}
	te.e = e
}

// Stop stops the server; Resume starts it again.
func (te *Etcd) Stop() {
	if te.e != nil {
		te.e.Close()
		te.e = nil
	}
}

// Client is a client of the server, closed when the test ends.
func (te *Etcd) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{te.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
