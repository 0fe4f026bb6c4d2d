// Package cluster lets several envgate gateways share one set of envs
// through etcd: membership (a session per node and a member key with its
// address and capacity), one owner per env (a key bound to the owner's
// session, created only if absent), placement (rendezvous hashing over
// the live nodes with room) and fencing (the owner key's revision locks
// the env's data dir).
//
// It owns the etcd client, the session and a local cache of members and
// owners kept by a watch, so that the gateway's per-request question
// "who owns this env?" is a map read, never an etcd round trip. It knows
// nothing of HTTP or processes: the gateway forwards, and the callback
// Config.Lost stops envs.
package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// Config configures a Node.
type Config struct {
	// Endpoints are etcd's client URLs. Required.
	Endpoints []string
	// CAFile, CertFile and KeyFile set TLS to etcd: a CA to verify it,
	// and a client certificate. Default none (plain or system roots for
	// https endpoints).
	CAFile, CertFile, KeyFile string
	// Name prefixes every key (/envgate/<name>/...), so that several
	// clusters can share one etcd. Required.
	Name string
	// Node is this gateway's name in the cluster. Required.
	Node string
	// Advertise is host:port where other nodes reach this gateway.
	// Required.
	Advertise string
	// SessionTTL is how long a silent node keeps its envs. Default 10s.
	SessionTTL time.Duration
	// PlaceTimeout bounds a placement that needs etcd (a claim). Default
	// 30s.
	PlaceTimeout time.Duration
	// MaxEnvs is this node's capacity, published to the others; 0: no
	// limit.
	MaxEnvs int
	// MemAvailable returns the memory this node can still give envs, in
	// bytes, published with the capacity; nil or 0: not known.
	// MinMemAvailable is this node's floor for it (see Member).
	MemAvailable    func() int64
	MinMemAvailable int64
	// Local returns the envs running (or starting) here. Each time the
	// node loads the owners (at registration, after a lost watch), a
	// local env another node owns, or nobody, is lost: so a node back
	// from a crash or a partition stops the copies of envs that moved.
	// Its length is the published capacity use. Default: none known, and
	// the capacity use is the number of envs this node owns.
	Local func() []string
	// Lost is called (on its own goroutine) with envs this node must stop
	// at once: all it owned when its session ended, or one another node
	// now owns. Required.
	Lost func(envs []string)
	// FenceDir holds one token file per env (see Fence). Required.
	FenceDir string
	// InheritLease, if set, is the lease of the gateway process this one
	// takes over from (a restart in place, which hands its envs over):
	// the first session keeps it, if it still lives, so this node's owner
	// keys, and the envs' fencing tokens, stay as they were.
	InheritLease int64
	Log          zerolog.Logger
}

func (c *Config) setDefaults() error {
	if len(c.Endpoints) == 0 || c.Name == "" || c.Node == "" || c.Advertise == "" || c.Lost == nil || c.FenceDir == "" {
		return errors.New("cluster: Endpoints, Name, Node, Advertise, Lost and FenceDir are required")
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = 10 * time.Second
	}
	if c.SessionTTL < time.Second {
		return fmt.Errorf("cluster: session ttl %v: want at least 1s", c.SessionTTL)
	}
	if c.PlaceTimeout == 0 {
		c.PlaceTimeout = 30 * time.Second
	}
	return nil
}

// tlsConfig builds the TLS config for etcd, or nil when none is asked for.
func (c *Config) tlsConfig() (*tls.Config, error) {
	if c.CAFile == "" && c.CertFile == "" && c.KeyFile == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: etcd ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cluster: etcd ca_file %s: no PEM certificate", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" || c.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: etcd cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
