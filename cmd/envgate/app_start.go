package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/envgate/envgate/certs"
	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/gateway/access"
	"github.com/envgate/envgate/gateway/admin"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/netns"
)

// startStep is one step of app.start.
type startStep struct {
	name string
	run  func(context.Context) error
}

// startSteps are the steps of app.start (serve.go), in order: each may
// use what the steps before it made, and app.shutdown undoes them in the
// reverse order.
func (a *app) startSteps() []startStep {
	return []startStep{
		{"inherit listeners", a.inheritListeners},
		{"lock instance", a.lockInstance},
		{"pprof", a.startPprof},
		{"namespaces", a.openNamespaces},
		{"firewall", a.openFirewall},
		{"env source", a.openSource},
		{"envs", a.startEnvs},
		{"previews", a.startPreviews},
		{"recover envs", a.recoverEnvs},
		{"cluster", a.joinCluster},
		{"gateway", a.newGateway},
		{"https", a.listenHTTPS},
		{"http", a.listenHTTP},
		{"tcp", a.listenTCP},
		{"untrack listeners", a.untrackListeners},
		{"admin", a.listenAdmin},
		{"take over", a.takeOver},
	}
}

// start runs startSteps in order and stops at the first that fails.
func (a *app) start(ctx context.Context) error {
	for _, s := range a.startSteps() {
		if err := s.run(ctx); err != nil {
			return err
		}
		a.log.Debug().Str("step", s.name).Msg("started")
	}
	return nil
}

// inheritListeners finds the listening sockets a predecessor (restart in
// place) or systemd (socket activation) passed; see handoff.go.
func (a *app) inheritListeners(context.Context) (err error) {
	a.pred, a.lset, err = inheritListeners(a.log)
	return err
}

// lockInstance takes the instance lock; a successor's waits in the
// background for its predecessor to exit.
func (a *app) lockInstance(context.Context) (err error) {
	lock := lockInstance
	if a.pred != nil {
		lock = a.pred.lockInstance
	}
	a.unlock, err = lock(a.cfg)
	return err
}

func (a *app) startPprof(context.Context) (err error) {
	a.stopPprof, err = startPprof(a.log)
	return err
}

// openNamespaces makes the namespace manager and, unless envs are to be
// adopted (from a predecessor, or after a crash with on_restart: adopt;
// recoverEnvs and takeOver clean up then), removes what an earlier run
// left behind.
func (a *app) openNamespaces(context.Context) (err error) {
	a.nsm, err = netns.New(netns.Config{Prefix: a.cfg.Instance, Pool: netip.MustParsePrefix(a.cfg.Network.Pool)})
	if err != nil {
		return err
	}
	if a.pred != nil || a.cfg.OnRestart == onRestartAdopt {
		return nil
	}
	if left, err := a.nsm.GC(nil); err != nil {
		a.log.Error().Err(err).Msg("cleaning up after an earlier run")
	} else if !left.Empty() {
		a.log.Warn().Strs("namespaces", left.Namespaces).Strs("links", left.Links).Int("processes", left.Processes).
			Msg("removed what an earlier run left behind")
	}
	return nil
}

// openFirewall installs the instance's firewall, which confines envs from
// before the first one exists, and the envs' DNS forwarder.
func (a *app) openFirewall(context.Context) (err error) {
	if a.tmpls, err = a.cfg.lifecycleTemplates(); err != nil {
		return err
	}
	a.fw, a.envDNS, a.stopDNS, err = a.cfg.openFirewall(a.log.With().Str("component", "firewall").Logger())
	if err != nil {
		return err
	}
	if a.fw == nil {
		a.log.Warn().Msg("network.firewall is off: envs can reach the host, each other and the network")
	}
	a.ownsTable = a.pred == nil // a successor's is its predecessor's until takeOver
	return nil
}

// openSource opens the env source: which env names exist. Dir and git
// sources re-read in the background; Allow is a map lookup, as the
// manager calls it with its lock held.
func (a *app) openSource(ctx context.Context) (err error) {
	a.src, err = a.cfg.envSource(ctx, a.log.With().Str("component", "source").Logger())
	return err
}

// startEnvs makes the env manager, and the Prometheus metrics it tells of
// its events (served by the admin listeners).
func (a *app) startEnvs(context.Context) (err error) {
	cfg, log := a.cfg, a.log
	a.metrics = admin.NewMetrics(buildVersion())
	// A destroyed env's worktree and certificate go with it (remains.go).
	a.remains = cfg.newEnvRemains(a.src, log.With().Str("component", "destroy").Logger())
	netPolicy := &lifecycle.SandboxPolicy{Firewall: a.fw, PolicyOf: lifecycle.TemplatePolicy(a.tmpls),
		Log: log.With().Str("component", "firewall").Logger()}
	// Cluster mode: the node the envs are claimed through, joined by the
	// cluster step.
	if a.cluster, err = newCluster(cfg, a.pred.clusterLease(), log); err != nil {
		return err
	}
	if a.cluster != nil {
		a.remains.others = a.cluster.evictOthers
	}
	dataRoot := filepath.Join(cfg.StateDir, "envs")
	// What runs each env's dev server (closed by shutdown after the envs).
	a.launcher, err = devserver.New(devserver.Config{
		DataRoot: dataRoot,
		// A worktree per env (source.checkouts), made before its start.
		Checkouts: cfg.checkoutsOf(a.src),
		// Each env's output on disk (admin.go: envgate logs).
		LogDir:        cfg.logDir(),
		LogMaxSize:    int(max(cfg.Logs.MaxSize>>20, 1)),
		LogMaxBackups: cfg.Logs.MaxBackups,
		// Each env gets a cgroup here (limits, memory for eviction).
		CgroupParent: cfg.cgroupParent(),
		// A uid per env (user: dynamic), and pid and mount namespaces.
		Users:   cfg.uidRange(),
		Isolate: true,
		// With the DNS forwarder, a resolv.conf naming it (envdns.go).
		Mounts: cfg.envMounts(a.envDNS),
		Log:    log.With().Str("component", "devserver").Logger(),
	})
	if err != nil {
		return err
	}
	a.envs, err = lifecycle.New(lifecycle.Config{
		Templates: a.tmpls,
		DataRoot:  dataRoot,
		Network:   lifecycle.NetnsNetwork{M: a.nsm, Policy: netPolicy},
		Launcher:  a.launcher,
		Allow:     a.src.Allow,
		Limits:    cfg.lifecycleLimits(),
		StateFile: cfg.stateFile(),
		WarmPool:  cfg.Network.WarmPool,
		// The handler is made by the gateway step; no env runs, so none
		// stops, before.
		BeforeStop: func(env string, addr netip.AddrPort) {
			if h := a.handler.Load(); h != nil {
				h.CloseEnvConns(env, addr)
			}
		},
		// A destroyed env's worktree and certificate go too.
		AfterDestroy: a.remains.remove,
		// Cluster mode: a start claims its env, a stop releases it.
		Ownership: a.cluster.ownership(),
		Observer:  a.metrics,
		Log:       log.With().Str("component", "lifecycle").Logger(),
	})
	if err != nil {
		return err
	}
	a.metrics.WatchEnvs(a.envs)
	return nil
}

// startPreviews starts pull-request previews: a push restarts the envs of
// moved branches, a deleted branch's env is destroyed; webhooks, GitHub
// deployments, destroy_after.
func (a *app) startPreviews(ctx context.Context) (err error) {
	a.pv, err = a.cfg.startPreviews(ctx, a.src, a.envs, a.log.With().Str("component", "previews").Logger())
	return err
}

// recoverEnvs adopts, or removes, what a crashed earlier run left. A
// successor takes its predecessor's envs over instead (takeOver).
func (a *app) recoverEnvs(context.Context) error {
	if a.pred == nil {
		recoverEnvs(a.cfg, a.envs, a.nsm, a.log)
	}
	return nil
}

// joinCluster joins the cluster in cluster mode: members and env owners
// through etcd. After recoverEnvs, so that envs adopted from a crashed
// run that another node owns now are stopped.
func (a *app) joinCluster(context.Context) error {
	if a.cluster != nil {
		a.cluster.start(a.cfg, a.envs)
		// Webhooks act cluster-wide (served from the gateway step on).
		a.cluster.usePreviews(a.pv)
	}
	a.ownsEnvs = a.pred == nil // a successor's are its predecessor's until takeOver
	return nil
}

// newGateway makes the gateway's handler, with access control (asked
// before anything else is done for a request or connection), and in front
// of it the previews' webhooks and the dashboard.
func (a *app) newGateway(context.Context) (err error) {
	cfg, log := a.cfg, a.log
	if a.policy, err = cfg.accessPolicy(log.With().Str("component", "access").Logger()); err != nil {
		return err
	}
	a.newEnvs = cfg.newEnvLimit()
	h, err := gateway.NewHandler(gateway.Config{
		Access:  a.policy,
		NewEnvs: a.newEnvs,
		Domains: cfg.Domains,
		Envs:    gateway.Lifecycle{Manager: a.envs},
		// Waiting, upstream protocol and cookie scope of each template.
		Templates: cfg.gatewayTemplates(),
		Log:       log.With().Str("component", "gateway").Logger(),
		// Named ports: <port><sep><env>.<domain>.
		PortSeparator:  cfg.PortSeparator,
		TrustedProxies: cfg.trustedProxies(),
		// Requests by status class and their latency (no allocation).
		Requests: a.metrics,
		// Cluster mode: envs of other nodes are forwarded there.
		Cluster:       a.cluster.placer(),
		Node:          cfg.clusterNode(),
		ClusterSecret: a.cluster.secret(),
		// The other nodes' requests for this node's own envs.
		NodeAPI: a.cluster.nodeAPI(cfg, a.envs, a.pv, a.remains, log.With().Str("component", "node-api").Logger()),
	})
	if err != nil {
		return err
	}
	a.handler.Store(h)
	// Webhooks on previews.host, authenticated by their signature: in
	// front of access control, for that host only.
	a.front = a.pv.front(h)
	// The dashboard at admin.dashboard_host, if set (dashboardhost.go).
	if cfg.Admin.DashboardHost != "" {
		a.front = h.WithDashboard(a.front, cfg.Admin.DashboardHost, dashboardHandler(cfg, a.envs, a.cluster.admin(), log.With().Str("component", "dashboard").Logger()))
	}
	return nil
}

// listenHTTPS starts certificates and the HTTPS listeners, unless
// tls.mode is off.
func (a *app) listenHTTPS(context.Context) error {
	cfg, log := a.cfg, a.log
	if certs.Mode(cfg.TLS.Mode) == certs.ModeOff {
		return nil
	}
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
		if closed && !a.policy.Covers(env) {
			return fmt.Errorf("%w: no access rule admits anyone to env %s", access.ErrRefused, env)
		}
		return a.envs.Allowed(env)
	}
	cc := cfg.certsConfig()
	cc.OnEvent = func(e certs.CertEvent) { a.metrics.CertEvent(string(e)) }
	cm, err := certs.New(cc, allow, log.With().Str("component", "certs").Logger())
	if err != nil {
		return err
	}
	a.cm = cm
	a.remains.certs.Store(cm)
	lns, err := a.lset.listen(cfg.Listen.HTTPS)
	if err != nil {
		return err
	}
	srv := gateway.NewHTTPServer(a.front, log.With().Str("component", "https").Logger())
	srv.TLSConfig = cm.TLSConfig()
	recv, sent := a.metrics.ByteCounters()
	for i, ln := range lns {
		lns[i] = tls.NewListener(gateway.CountBytes(ln, recv, sent), srv.TLSConfig)
	}
	a.servers = append(a.servers, httpServer{srv, lns})
	return nil
}

// listenHTTP opens the plain HTTP listeners; with certificates, they
// answer ACME HTTP challenges too.
func (a *app) listenHTTP(context.Context) error {
	lns, err := a.lset.listen(a.cfg.Listen.HTTP)
	if err != nil {
		return err
	}
	// Bytes through the gateway: counted on its client connections.
	recv, sent := a.metrics.ByteCounters()
	for i, ln := range lns {
		lns[i] = gateway.CountBytes(ln, recv, sent)
	}
	h := a.front
	if a.cm != nil {
		h = a.cm.HTTPHandler(a.front)
		if a.cluster != nil {
			// The other nodes' hops come here, not to be redirected.
			h = gateway.HopsTo(a.front, a.cluster.secret(), h)
		}
	}
	plain := gateway.NewHTTPServer(h, a.log.With().Str("component", "http").Logger())
	if a.cfg.Listen.H2C {
		gateway.EnableH2C(plain)
	}
	a.servers = append(a.servers, httpServer{plain, lns})
	return nil
}

// listenTCP opens the tcp: listeners.
func (a *app) listenTCP(context.Context) (err error) {
	var tcpTLS *tls.Config // for tcp: listeners that terminate TLS
	if a.cm != nil {
		tcpTLS = a.cm.TLSConfig()
	}
	a.tcps, err = newTCPListeners(a.cfg, a.envs, tcpTLS, a.lset, a.policy, a.newEnvs, a.cluster, a.log)
	return err
}

// untrackListeners exempts the client traffic of the listeners opened so
// far (HTTP, HTTPS, tcp:; not the admin API's) from connection tracking,
// which the firewall turns on for the whole host (netns
// Firewall.SetListenerPorts). It only saves work per packet, so a
// failure is logged, not fatal.
func (a *app) untrackListeners(context.Context) error {
	if a.fw == nil || a.cfg.Network.TrackListeners {
		return nil
	}
	ports := a.lset.tcpPorts()
	if err := a.fw.SetListenerPorts(ports); err != nil {
		a.log.Warn().Err(err).Msg("listeners' connections stay tracked")
		return nil
	}
	a.log.Debug().Any("ports", ports).Msg("listeners' connections untracked")
	return nil
}

// listenAdmin opens the admin API's listeners, and closes inherited
// sockets no listener claimed.
func (a *app) listenAdmin(context.Context) (err error) {
	a.adm, err = newAdminServers(a.cfg, a.envs, a.cluster.admin(), a.metrics.Handler(), a.lset, a.log.With().Str("component", "admin").Logger())
	if err != nil {
		return err
	}
	a.lset.closeUnclaimed()
	return nil
}

// takeOver, in a successor, tells the predecessor this process is ready
// and adopts the envs it hands over (handoff.go).
func (a *app) takeOver(context.Context) error {
	if a.pred == nil {
		return nil
	}
	if err := a.pred.ready(); err != nil {
		return err
	}
	// On "ready" the predecessor hands its envs and the firewall table
	// over and exits without stopping them: they are this process's now,
	// whatever happens next.
	a.ownsEnvs, a.ownsTable = true, true
	a.cluster.takenOver() // and the cluster session they are owned under
	return a.pred.takeOver(a.envs, a.nsm)
}
