package main

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/gateway/access"
	"github.com/envgate/envgate/lifecycle"
	"github.com/rs/zerolog"
)

// tcpListeners are the tcp: listeners, TLS routed by SNI.
type tcpListeners struct {
	proxies []*gateway.TCPProxy
	lns     [][]net.Listener
}

func newTCPListeners(cfg *Config, envs *lifecycle.Manager, tlsCfg *tls.Config, lset *listenerSet,
	policy *access.Policy, newEnvs *gateway.NewEnvLimit, cluster *clusterMode, log zerolog.Logger) (*tcpListeners, error) {
	t := &tcpListeners{}
	conns := &gateway.Conns{} // one registry: one grace period for all
	for _, l := range cfg.TCP {
		p, err := gateway.NewTCPProxy(gateway.TCPConfig{
			Domains:       cfg.Domains,
			Envs:          gateway.Lifecycle{Manager: envs},
			PortSeparator: cfg.PortSeparator,
			Port:          l.Port,
			Mode:          gateway.TLSMode(l.TLS),
			TLS:           tlsCfg,
			Conns:         conns,
			Access:        policy,
			NewEnvs:       newEnvs,
			// In cluster mode, connections for envs of other nodes are
			// relayed there.
			Cluster:       cluster.placer(),
			Node:          cfg.clusterNode(),
			ClusterSecret: cluster.secret(),
			Log:           log.With().Str("component", "tcp").Str("listen", l.Listen).Logger(),
		})
		if err != nil {
			return nil, err
		}
		lns, err := lset.listen(l.Listen)
		if err != nil {
			return nil, err
		}
		t.proxies = append(t.proxies, p)
		t.lns = append(t.lns, lns)
	}
	return t, nil
}

// serve runs every listener until ctx ends, then lets open connections
// run for up to drain before it closes them.
func (t *tcpListeners) serve(ctx context.Context, drain time.Duration) error {
	if len(t.proxies) == 0 {
		return nil
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for i, p := range t.proxies {
		for _, ln := range t.lns[i] {
			wg.Go(func() {
				if err := p.Serve(ln); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeoutCause(context.Background(), drain, errors.New("gateway: drain period over"))
	defer cancel()
	var swg sync.WaitGroup
	for _, p := range t.proxies {
		swg.Go(func() { p.Shutdown(sctx) })
	}
	swg.Wait()
	wg.Wait()
	return errors.Join(errs...)
}
