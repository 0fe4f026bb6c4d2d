package main

import (
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/cluster"
	"github.com/rs/zerolog"
)

// startCluster joins the cluster of cfg.Cluster: a session, the member key,
// a watch of members and owners. Envs this node loses (its session ended,
// or another node owns them now) are stopped at once.
func startCluster(cfg *Config, envs *lifecycle.Manager, log zerolog.Logger) (*cluster.Node, error) {
	lg := log.With().Str("component", "cluster").Logger()
	lost := func(names []string) {
		for _, name := range names {
			if envs.Stop(name, "cluster: no longer owned by this node") {
				lg.Warn().Str("env", name).Msg("stopped an env this node no longer owns")
			}
		}
	}
	ccfg := cfg.clusterConfig(lost, lg)
	ccfg.Local = func() []string {
		var names []string
		for _, e := range envs.List() {
			if e.State == lifecycle.Starting || e.State == lifecycle.Ready {
				names = append(names, e.Name)
			}
		}
		return names
	}
	node, err := cluster.New(ccfg)
	if err != nil {
		return nil, err
	}
	node.Start()
	lg.Info().Str("node", cfg.Cluster.Node).Str("advertise", cfg.Cluster.Advertise).Strs("etcd", cfg.Cluster.Etcd.Endpoints).Msg("cluster mode")
	return node, nil
}
