package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/envgate/envgate/certs"
	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/gateway/access"
	"github.com/envgate/envgate/gateway/admin"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/netns"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
)

func newServeCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the gateway",
		Long: `Run the gateway until SIGINT or SIGTERM.

On start, after a crash of an earlier run of the same instance, it adopts
the envs that run still had (on_restart: adopt, the default; recorded in
state_dir/run/<instance>.state.json) and removes whatever else it left
behind (namespaces, veths, processes, cgroups); with on_restart: clean it
removes everything. On SIGINT/SIGTERM it stops accepting,
lets in-flight requests finish (shutdown_timeout, default 10s), stops every
env and removes every namespace it made. Env data dirs under state_dir/envs
are kept.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			cfg, err := LoadConfig(g.config)
			if err != nil {
				return err
			}
			if err := requireRoot("envgate serve"); err != nil {
				return err
			}
			return serve(cmd.Context(), cfg, log)
		},
	}
}

// serve runs the gateway described by cfg until ctx ends.
func serve(ctx context.Context, cfg *Config, log zerolog.Logger) error {
	// A restart's successor (or a socket-activated gateway) inherits its
	// listening sockets; see handoff.go.
	pred, lset, err := inheritListeners(log)
	if err != nil {
		return err
	}
	lock := lockInstance
	if pred != nil {
		lock = pred.lockInstance
	}
	unlock, err := lock(cfg)
	if err != nil {
		return err
	}
	defer unlock()
	handedOff := false // envs given to a successor: do not stop them
	stopPprof, err := startPprof(log)
	if err != nil {
		return err
	}
	defer stopPprof()

	nsm, err := netns.New(netns.Config{Prefix: cfg.Instance, Pool: netip.MustParsePrefix(cfg.Network.Pool)})
	if err != nil {
		return err
	}
	if pred != nil || cfg.OnRestart == onRestartAdopt {
		// The predecessor's envs (handed over, or recorded in the state
		// file after a crash) are adopted, and the rest removed, below.
	} else if left, err := nsm.GC(nil); err != nil {
		log.Error().Err(err).Msg("cleaning up after an earlier run")
	} else if !left.Empty() {
		log.Warn().Strs("namespaces", left.Namespaces).Strs("links", left.Links).Int("processes", left.Processes).
			Msg("removed what an earlier run left behind")
	}

	tmpls, err := cfg.lifecycleTemplates()
	if err != nil {
		return err
	}
	// The instance's firewall confines envs from before the first one
	// exists. Deferred before the manager, so it goes after the envs; a
	// successor that takes the envs over takes the table over too.
	fw, envDNS, stopDNS, err := cfg.openFirewall(log.With().Str("component", "firewall").Logger())
	if err != nil {
		return err
	}
	if fw == nil {
		log.Warn().Msg("network.firewall is off: envs can reach the host, each other and the network")
	}
	defer func() {
		stopDNS()
		if fw != nil && !handedOff {
			if err := fw.Close(); err != nil {
				log.Error().Err(err).Msg("removing the firewall")
			}
		}
	}()
	netPolicy := &lifecycle.SandboxPolicy{Firewall: fw, PolicyOf: lifecycle.TemplatePolicy(tmpls),
		Log: log.With().Str("component", "firewall").Logger()}
	// Which env names exist. Dir and git sources re-read in the
	// background; Allow is a map lookup, as the manager calls it with its
	// lock held. Deferred first, so it closes after the manager.
	src, err := cfg.envSource(ctx, log.With().Str("component", "source").Logger())
	if err != nil {
		return err
	}
	defer src.Close()
	var handler atomic.Pointer[gateway.Handler]
	// Prometheus metrics: told of lifecycle events and requests, served
	// by the admin listeners.
	metrics := admin.NewMetrics(buildVersion())
	envs, err := lifecycle.New(lifecycle.Config{
		Templates: tmpls,
		DataRoot:  filepath.Join(cfg.StateDir, "envs"),
		Network:   lifecycle.NetnsNetwork{M: nsm, Policy: netPolicy},
		Allow:     src.Allow,
		// A worktree per env (source.checkouts), made before its start.
		Checkouts: cfg.checkoutsOf(src),
		Limits:    cfg.lifecycleLimits(),
		StateFile: cfg.stateFile(),
		// Each env's output on disk (admin.go: envgate logs).
		LogDir:        cfg.logDir(),
		LogMaxSize:    int(max(cfg.Logs.MaxSize>>20, 1)),
		LogMaxBackups: cfg.Logs.MaxBackups,
		// Each env gets a cgroup here (limits, memory for eviction).
		CgroupParent: cfg.cgroupParent(),
		WarmPool:     cfg.Network.WarmPool,

		// A uid per env (user: dynamic), and pid and mount namespaces.
		Users:   cfg.uidRange(),
		Isolate: true,
		// With the DNS forwarder, a resolv.conf naming it (envdns.go).
		Mounts: cfg.envMounts(envDNS, log.With().Str("component", "dns").Logger()),
		// The handler is made below; no env runs, so none stops, before.
		BeforeStop: func(env string, addr netip.AddrPort) {
			if h := handler.Load(); h != nil {
				h.CloseEnvConns(env, addr)
			}
		},
		Observer: metrics,
		Log:      log.With().Str("component", "lifecycle").Logger(),
	})
	if err != nil {
		return err
	}
	metrics.WatchEnvs(envs)
	// Pull-request previews: a push restarts the envs of moved branches,
	// a deleted branch's env is destroyed; webhooks, GitHub deployments,
	// destroy_after.
	pv, err := cfg.startPreviews(ctx, src, envs, log.With().Str("component", "previews").Logger())
	if err != nil {
		return err
	}
	defer pv.Close()
	if pred == nil {
		recoverEnvs(cfg, envs, nsm, log)
	}
	// Cluster mode: members and env owners through etcd. Deferred before
	// the envs' stop, so its session (and this node's owner keys) ends
	// after them. Started after the recovery, so that envs adopted from
	// a crashed run that another node owns now are stopped.
	var placer gateway.Placer
	if cfg.Cluster != nil {
		node, err := startCluster(cfg, envs, log)
		if err != nil {
			return err
		}
		defer node.Close()
		placer = node
	}
	defer func() {
		if handedOff {
			log.Info().Msg("stopped; envs left running for the new gateway process")
			return
		}
		// Stop every env, then make sure no namespace of ours is left.
		sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := envs.Close(sctx); err != nil {
			log.Error().Err(err).Msg("stopping envs")
		}
		if left, err := nsm.GC(nil); err != nil || !left.Empty() {
			log.Warn().Err(err).Strs("namespaces", left.Namespaces).Msg("removed namespaces left after stopping envs")
		}
		log.Info().Msg("stopped")
	}()

	// Who may reach which envs: asked before anything else is done for
	// a request or connection.
	policy, err := cfg.accessPolicy(log.With().Str("component", "access").Logger())
	if err != nil {
		return err
	}
	newEnvs := cfg.newEnvLimit()
	h, err := gateway.NewHandler(gateway.Config{
		Access:  policy,
		NewEnvs: newEnvs,
		Domains: cfg.Domains,
		Envs:    envs,
		Log:     log.With().Str("component", "gateway").Logger(),
		// Named ports: <port><sep><env>.<domain>.
		PortSeparator:  cfg.PortSeparator,
		TrustedProxies: cfg.trustedProxies(),
		// Requests by status class and their latency (no allocation).
		Requests: metrics,
		// Cluster mode: envs of other nodes are forwarded there.
		Cluster: placer,
		Node:    cfg.clusterNode(),
	})
	if err != nil {
		return err
	}
	handler.Store(h)

	// Webhooks on previews.host, authenticated by their signature: in
	// front of access control, for that host only.
	front := pv.front(h)
	// The dashboard at admin.dashboard_host, if set (dashboardhost.go).
	if cfg.Admin.DashboardHost != "" {
		front = h.WithDashboard(front, cfg.Admin.DashboardHost, dashboardHandler(cfg, envs, log.With().Str("component", "dashboard").Logger()))
	}
	var httpHandler http.Handler = front
	type server struct {
		srv *http.Server
		lns []net.Listener
	}
	var servers []server
	defer func() {
		for _, s := range servers {
			for _, ln := range s.lns {
				ln.Close()
			}
		}
	}()

	var tcpTLS *tls.Config // for tcp: listeners that terminate TLS
	if certs.Mode(cfg.TLS.Mode) != certs.ModeOff {
		// Certificates only for envs the lifecycle would run: the same
		// template match and allow check as Acquire, asked before any ACME
		// order.
		// And only for envs some access rule lets anyone reach: on
		// domains other than localhost ones, others are refused anyway.
		closed := !slices.ContainsFunc(cfg.Domains, gateway.LocalDomain)
		dashboard := cfg.dashboardLabel()
		allow := func(_ context.Context, env string) error {
			if env == dashboard {
				return nil // admin.dashboard_host: an access entry covers it (config check)
			}
			if closed && !policy.Covers(env) {
				return fmt.Errorf("%w: no access rule admits anyone to env %s", access.ErrRefused, env)
			}
			return envs.Allowed(env)
		}
		cc := cfg.certsConfig()
		cc.OnEvent = func(e certs.CertEvent) { metrics.CertEvent(string(e)) }
		cm, err := certs.New(cc, allow, log.With().Str("component", "certs").Logger())
		if err != nil {
			return err
		}
		defer cm.Close()
		httpHandler = cm.HTTPHandler(front)
		tcpTLS = cm.TLSConfig()
		lns, err := lset.listen(cfg.Listen.HTTPS)
		if err != nil {
			return err
		}
		srv := gateway.NewHTTPServer(front, log.With().Str("component", "https").Logger())
		srv.TLSConfig = cm.TLSConfig()
		recv, sent := metrics.ByteCounters()
		for i, ln := range lns {
			lns[i] = tls.NewListener(gateway.CountBytes(ln, recv, sent), srv.TLSConfig)
		}
		servers = append(servers, server{srv, lns})
	}
	lns, err := lset.listen(cfg.Listen.HTTP)
	if err != nil {
		return err
	}
	// Bytes through the gateway: counted on its client connections.
	recv, sent := metrics.ByteCounters()
	for i, ln := range lns {
		lns[i] = gateway.CountBytes(ln, recv, sent)
	}
	tcps, err := newTCPListeners(cfg, envs, tcpTLS, lset, policy, newEnvs, log)
	if err != nil {
		return err
	}
	adm, err := newAdminServers(cfg, envs, metrics.Handler(), lset, log.With().Str("component", "admin").Logger())
	if err != nil {
		return err
	}
	lset.closeUnclaimed()
	if pred != nil {
		if err := pred.takeOver(envs, nsm); err != nil {
			return err
		}
	}
	plain := gateway.NewHTTPServer(httpHandler, log.With().Str("component", "http").Logger())
	if cfg.Listen.H2C {
		gateway.EnableH2C(plain)
	}
	servers = append(servers, server{plain, lns})

	var addrs []string
	for _, s := range servers {
		for _, ln := range s.lns {
			addrs = append(addrs, ln.Addr().String())
		}
	}
	log.Info().Strs("listen", addrs).Strs("domains", cfg.Domains).Str("tls", cfg.TLS.Mode).
		Str("instance", cfg.Instance).Str("config", cfg.file).Msg("envgate serving")

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(servers))
	for i, s := range servers {
		wg.Go(func() {
			errs[i] = gateway.Serve(ctx, s.srv, s.lns, time.Duration(cfg.ShutdownTimeout))
			cancel() // one listener failing stops the gateway
		})
	}
	var tcpErr error
	wg.Go(func() { tcpErr = tcps.serve(ctx, time.Duration(cfg.ShutdownTimeout)) })
	var adminErr error
	wg.Go(func() { adminErr = adm.serve(ctx, time.Duration(cfg.ShutdownTimeout)) })
	wg.Go(func() {
		// Upgraded connections (WebSockets) get the same grace as requests,
		// on a stop and on a restart alike: http.Server.Shutdown does not
		// wait for them.
		<-ctx.Done()
		sctx, scancel := context.WithTimeout(context.Background(), time.Duration(cfg.ShutdownTimeout))
		defer scancel()
		h.Shutdown(sctx)
	})
	handedOff = runUntilStop(ctx, cancel, pred, lset, envs, cfg, log)
	log.Info().Msg("shutting down: draining requests")
	wg.Wait()
	if !handedOff {
		removePidFile(cfg)
	}
	return errors.Join(append(errs, tcpErr, adminErr)...)
}

// lockInstance takes an exclusive lock on the instance, so that two
// gateways (or a gateway and `envgate gc`) never manage the same
// namespaces at once. The lock dies with the process.
func lockInstance(cfg *Config) (func(), error) {
	dir := filepath.Join(cfg.StateDir, "run")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	path := filepath.Join(dir, cfg.Instance+".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another envgate of instance %q is running (lock %s held); give this one another `instance` and state_dir, or stop the other", cfg.Instance, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
