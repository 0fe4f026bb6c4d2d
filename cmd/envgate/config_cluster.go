package main

import (
	"bytes"
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/cluster"
	"github.com/rs/zerolog"
)

// ClusterConfig is the cluster: section. Without it (the default) the
// gateway runs alone and nothing of this applies. With it, several
// gateways share one set of envs through etcd: each env runs on one node,
// and any node answers any env's hostname (forwarding to the owner). Env
// data dirs must then be on a filesystem every node mounts (state_dir).
type ClusterConfig struct {
	Etcd struct {
		// Endpoints are etcd's client URLs, e.g. https://10.0.0.10:2379.
		// Required.
		Endpoints []string `yaml:"endpoints"`
		// CAFile verifies etcd's certificate; CertFile and KeyFile are
		// this node's client certificate. Default none.
		CAFile   string `yaml:"ca_file"`
		CertFile string `yaml:"cert_file"`
		KeyFile  string `yaml:"key_file"`
	} `yaml:"etcd"`
	// Name prefixes the cluster's keys, so that several clusters can share
	// one etcd. Default "envgate".
	Name string `yaml:"name"`
	// Node is this gateway's name in the cluster. Default the hostname.
	Node string `yaml:"node"`
	// Advertise is host:port where the other nodes reach this gateway's
	// HTTP listener. Default the environment variable
	// ENVGATE_CLUSTER_ADVERTISE (one config for every node: a DaemonSet
	// sets it from the pod's IP); required one way or the other.
	Advertise string `yaml:"advertise"`
	// SessionTTL is how long a silent node keeps its envs (whole seconds,
	// at least 1s). Default 10s.
	SessionTTL Duration `yaml:"session_ttl"`
	// SecretFile is the absolute path of a file with the secret every
	// node of the cluster shares (at least 16 bytes; `openssl rand
	// -base64 32`), read at start: a node signs each request it forwards
	// with it, and the owner believes a forwarded request (its client
	// admitted by access control, its forwarding headers) only with a
	// valid signature. Required; keep the file mode 0600.
	SecretFile string `yaml:"secret_file"`
}

// advertiseEnv names the environment variable cluster.advertise defaults
// to.
const advertiseEnv = "ENVGATE_CLUSTER_ADVERTISE"

// clusterNameRE is what cluster.name and cluster.node may be: they are
// parts of etcd keys and values of the hop header.
var clusterNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

func (c *Config) setClusterDefaults() {
	cl := c.Cluster
	if cl == nil {
		return
	}
	if cl.Name == "" {
		cl.Name = "envgate"
	}
	if cl.Node == "" {
		cl.Node, _ = os.Hostname()
	}
	if cl.Advertise == "" {
		cl.Advertise = os.Getenv(advertiseEnv)
	}
	if cl.SessionTTL == 0 {
		cl.SessionTTL = Duration(10 * time.Second)
	}
}

func (c *Config) validateCluster() []error {
	cl := c.Cluster
	if cl == nil {
		return nil
	}
	var errs []error
	add := func(path, msg string, args ...any) { errs = append(errs, c.errAt(path, msg, args...)) }
	if len(cl.Etcd.Endpoints) == 0 {
		add("cluster.etcd.endpoints", "required: etcd's client URLs, e.g. [https://10.0.0.10:2379]")
	}
	for i, e := range cl.Etcd.Endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			add("cluster.etcd.endpoints."+strconv.Itoa(i), "%q: want a URL such as https://10.0.0.10:2379", e)
		}
	}
	for _, f := range []struct{ key, path string }{{"ca_file", cl.Etcd.CAFile}, {"cert_file", cl.Etcd.CertFile}, {"key_file", cl.Etcd.KeyFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			add("cluster.etcd."+f.key, "%v", err)
		}
	}
	if (cl.Etcd.CertFile == "") != (cl.Etcd.KeyFile == "") {
		add("cluster.etcd.cert_file", "set cert_file and key_file together")
	}
	if !clusterNameRE.MatchString(cl.Name) {
		add("cluster.name", "%q: want 1-63 of a-z, A-Z, 0-9, '.', '_' and '-'", cl.Name)
	}
	if !clusterNameRE.MatchString(cl.Node) {
		add("cluster.node", "%q: want 1-63 of a-z, A-Z, 0-9, '.', '_' and '-' (the default is the hostname)", cl.Node)
	}
	host, _, err := net.SplitHostPort(cl.Advertise)
	if cl.Advertise == "" {
		add("cluster.advertise", "required: host:port where the other nodes reach this gateway, e.g. 10.0.0.5:8080 (or set $"+advertiseEnv+")")
	} else if err != nil || host == "" {
		add("cluster.advertise", "%q: want host:port, e.g. 10.0.0.5:8080", cl.Advertise)
	} else if a, err := netip.ParseAddr(host); err == nil && a.IsUnspecified() {
		add("cluster.advertise", "%q: an unspecified address; give one the other nodes can reach", cl.Advertise)
	}
	if !filepath.IsAbs(cl.SecretFile) {
		add("cluster.secret_file", "%q: want the absolute path of a file with the secret all nodes share (e.g. made by `openssl rand -base64 32 > f; chmod 600 f`)", cl.SecretFile)
	}
	if d := time.Duration(cl.SessionTTL); d < time.Second || d%time.Second != 0 {
		add("cluster.session_ttl", "%v: want whole seconds, at least 1s (etcd leases count in seconds)", d)
	}
	return errs
}

// clusterConfig is the cluster.Config for this gateway; lost stops envs.
func (c *Config) clusterConfig(lost func([]string), log zerolog.Logger) cluster.Config {
	cl := c.Cluster
	place := 30 * time.Second
	if t := c.maxReadyTimeout(); t > 0 {
		place = t
	}
	return cluster.Config{
		Endpoints:    cl.Etcd.Endpoints,
		CAFile:       cl.Etcd.CAFile,
		CertFile:     cl.Etcd.CertFile,
		KeyFile:      cl.Etcd.KeyFile,
		Name:         cl.Name,
		Node:         cl.Node,
		Advertise:    cl.Advertise,
		SessionTTL:   time.Duration(cl.SessionTTL),
		PlaceTimeout: place,
		MaxEnvs:      c.Limits.MaxEnvs,
		MemAvailable: func() int64 {
			avail, err := lifecycle.SystemAvailableMemory()
			if err != nil {
				return 0 // not known: placement goes by max_envs alone
			}
			return avail
		},
		MinMemAvailable: int64(c.Limits.MinAvailableMemory),
		Lost:            lost,
		FenceDir:        filepath.Join(c.StateDir, "fence"),
		Log:             log,
	}
}

// maxReadyTimeout is the longest a template's start may take, its
// ready.timeout plus, with prepare steps, its prepare_timeout: a
// placement waits for etcd as long.
func (c *Config) maxReadyTimeout() time.Duration {
	var d time.Duration
	for _, t := range c.Templates {
		start := time.Duration(t.Ready.Timeout)
		if len(t.Prepare) > 0 {
			start = cmp.Or(start, lifecycle.DefaultStartTimeout) +
				cmp.Or(time.Duration(t.PrepareTimeout), lifecycle.DefaultPrepareTimeout)
		}
		d = max(d, start)
	}
	return d
}

// readClusterSecret reads cluster.secret_file.
func (c *Config) readClusterSecret() ([]byte, error) {
	b, err := os.ReadFile(c.Cluster.SecretFile)
	b = bytes.TrimSpace(b)
	if err == nil && len(b) < gateway.MinClusterSecret {
		err = fmt.Errorf("%s holds %d bytes: want at least %d (`openssl rand -base64 32`)", c.Cluster.SecretFile, len(b), gateway.MinClusterSecret)
	}
	if err != nil {
		return nil, c.errAt("cluster.secret_file", "%v", err)
	}
	return b, nil
}

// runDir holds this gateway's own runtime files: its lock, pid file,
// state file and admin socket (state_dir/run). In cluster mode the state
// dir is every node's, so each node has its own: state_dir/run/<node>;
// a node must never adopt another's envs nor take its lock.
func (c *Config) runDir() string {
	if c.Cluster != nil {
		return filepath.Join(c.StateDir, "run", c.Cluster.Node)
	}
	return filepath.Join(c.StateDir, "run")
}

// clusterNode is this node's name, "" outside cluster mode.
func (c *Config) clusterNode() string {
	if c.Cluster == nil {
		return ""
	}
	return c.Cluster.Node
}
