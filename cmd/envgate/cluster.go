package main

import (
	"context"
	"sync/atomic"

	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/cluster"
	"github.com/rs/zerolog"
)

// clusterMode is this gateway's part in the cluster of cfg.Cluster: a
// session, the member key, a watch of members and owners. Envs this node
// loses (its session ended, or another node owns them now) are stopped
// at once; each start claims its env and each stop releases it.
type clusterMode struct {
	node *cluster.Node
	envs atomic.Pointer[lifecycle.Manager] // set by start
	log  zerolog.Logger
	// fenceDir is where the fencing tokens are recorded.
	fenceDir string
	// hopSecret signs the requests nodes forward to each other.
	hopSecret []byte
}

// newCluster makes the node of cfg.Cluster, not yet started; nil outside
// cluster mode. Close it.
func newCluster(cfg *Config, log zerolog.Logger) (*clusterMode, error) {
	if cfg.Cluster == nil {
		return nil, nil
	}
	secret, err := cfg.readClusterSecret()
	if err != nil {
		return nil, err
	}
	c := &clusterMode{log: log.With().Str("component", "cluster").Logger(), hopSecret: secret}
	lost := func(names []string) {
		envs := c.envs.Load()
		for _, name := range names {
			if envs != nil && envs.Stop(name, "cluster: no longer owned by this node") {
				c.log.Warn().Str("env", name).Msg("stopped an env this node no longer owns")
			}
		}
	}
	ccfg := cfg.clusterConfig(lost, c.log)
	ccfg.Local = func() []string {
		envs := c.envs.Load()
		if envs == nil {
			return nil
		}
		var names []string
		for _, e := range envs.List() {
			if e.State == lifecycle.Starting || e.State == lifecycle.Ready {
				names = append(names, e.Name)
			}
		}
		return names
	}
	c.fenceDir = ccfg.FenceDir
	node, err := cluster.New(ccfg)
	if err != nil {
		return nil, err
	}
	c.node = node
	return c, nil
}

// ownership is what the lifecycle claims envs through: nil outside
// cluster mode.
func (c *clusterMode) ownership() lifecycle.Ownership {
	if c == nil {
		return nil
	}
	return c
}

// placer is what the gateway places envs through: nil outside cluster
// mode.
func (c *clusterMode) placer() gateway.Placer {
	if c == nil {
		return nil
	}
	return c.node
}

// secret is the secret hops are signed with: nil outside cluster mode.
func (c *clusterMode) secret() []byte {
	if c == nil {
		return nil
	}
	return c.hopSecret
}

// start joins the cluster, after the recovery of adopted envs, so that
// those another node owns now are stopped.
func (c *clusterMode) start(cfg *Config, envs *lifecycle.Manager) {
	c.envs.Store(envs)
	c.node.Start()
	c.log.Info().Str("node", cfg.Cluster.Node).Str("advertise", cfg.Cluster.Advertise).Strs("etcd", cfg.Cluster.Etcd.Endpoints).Msg("cluster mode")
}

// Close ends the session; this node's owner keys go with it.
func (c *clusterMode) Close() error {
	if c == nil {
		return nil
	}
	return c.node.Close()
}

// Claim implements lifecycle.Ownership.
func (c *clusterMode) Claim(ctx context.Context, env string) (lifecycle.Fence, error) {
	token, err := c.node.Claim(ctx, env)
	if err != nil {
		return lifecycle.Fence{}, err
	}
	return lifecycle.Fence{Dir: c.fenceDir, Token: token}, nil
}

// Release implements lifecycle.Ownership.
func (c *clusterMode) Release(env string, token int64) { c.node.Release(env, token) }
