package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Without cluster: nothing changes; with it, defaults fill in and each
// mistake names its file, line and field.
func TestConfigCluster(t *testing.T) {
	c, err := loadString(t, "{}\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster != nil || c.clusterNode() != "" {
		t.Fatalf("cluster mode on without a cluster section: %+v", c.Cluster)
	}
	c, err = loadString(t, `cluster:
  etcd: {endpoints: ["https://10.0.0.10:2379"]}
  node: gw-a
  advertise: "10.0.0.5:8080"
  secret_file: /etc/envgate/cluster-secret
`)
	if err != nil {
		t.Fatal(err)
	}
	// The state dir is every node's: each node's own files are apart.
	if want := filepath.Join(c.StateDir, "run", "gw-a"); c.runDir() != want || filepath.Dir(c.Admin.Socket) != want || filepath.Dir(c.stateFile()) != want || filepath.Dir(pidFile(c)) != want {
		t.Errorf("node files: run dir %s, socket %s, state file %s, pid file %s; want all in %s", c.runDir(), c.Admin.Socket, c.stateFile(), pidFile(c), want)
	}
	// advertise from the environment, for one config on every node; the
	// node's name is then the hostname.
	t.Setenv(advertiseEnv, "10.0.0.7:8080")
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	if c, err := loadString(t, "cluster:\n  etcd: {endpoints: [\"http://e:2379\"]}\n  secret_file: /s\n"); err != nil || c.Cluster.Advertise != "10.0.0.7:8080" || c.Cluster.Node != host || c.clusterNode() != host {
		t.Errorf("advertise from $%s, node from the hostname %q: %v, %v", advertiseEnv, host, c, err)
	}
	// The secret is read at start: too short a one is refused.
	short := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(short, []byte("0123456789\n"), 0o600)
	c.Cluster.SecretFile = short
	if _, err := c.readClusterSecret(); err == nil || !strings.Contains(err.Error(), "holds 10 bytes: want at least 16") {
		t.Errorf("a 10-byte secret: %v", err)
	}
	os.WriteFile(short, []byte("0123456789abcdef\n"), 0o600)
	if b, err := c.readClusterSecret(); err != nil || string(b) != "0123456789abcdef" {
		t.Errorf("a 16-byte secret: %q, %v", b, err)
	}
	if c.Cluster.Name != "envgate" || time.Duration(c.Cluster.SessionTTL) != 10*time.Second || c.clusterNode() != "gw-a" {
		t.Errorf("defaults: %+v", c.Cluster)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"cluster: {node: a, advertise: \"h:1\"}\n", ":1: cluster.etcd.endpoints: required"},
		{"cluster:\n  etcd: {endpoints: [\"10.0.0.1:2379\"]}\n  advertise: \"h:1\"\n", ":2: cluster.etcd.endpoints[0]:"},
		{"cluster:\n  etcd: {endpoints: [\"http://e:2379\"]}\n  advertise: \"h:1\"\n  node: \"a/b\"\n", ":4: cluster.node:"},
		{"cluster:\n  etcd: {endpoints: [\"http://e:2379\"]}\n  advertise: \"0.0.0.0:8080\"\n", ":3: cluster.advertise:"},
		{"cluster:\n  etcd: {endpoints: [\"http://e:2379\"]}\n  advertise: \"h:1\"\n  session_ttl: 1500ms\n", ":4: cluster.session_ttl:"},
		{"cluster:\n  etcd: {endpoints: [\"http://e:2379\"], cert_file: /nonexistent}\n  advertise: \"h:1\"\n", "cluster.etcd.cert_file"},
		{"cluster:\n  etcd: {endpoints: [\"http://e:2379\"]}\n  advertise: \"h:1\"\n  nodes: x\n", ":4: nodes: unknown key"},
		{"cluster:\n  etcd: {endpoints: [\"http://e:2379\"]}\n  advertise: \"h:1\"\n", ":1: cluster.secret_file: \"\": want the absolute path"},
		{"cluster:\n  etcd: {endpoints: [\"http://e:2379\"]}\n  advertise: \"h:1\"\n  secret_file: s\n", ":4: cluster.secret_file: \"s\""},
	} {
		_, err := loadString(t, tc.yaml)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
}
