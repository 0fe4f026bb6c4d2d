package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/envgate/envgate/certs"
	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/gateway/access"
	"github.com/envgate/envgate/gateway/admin"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/lifecycle/sources"
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

// serve runs the gateway described by cfg until ctx ends, or until a
// successor took it over (SIGHUP, SIGUSR2: handoff.go).
func serve(ctx context.Context, cfg *Config, log zerolog.Logger) error {
	a := &app{cfg: cfg, log: log}
	if err := a.start(ctx); err != nil {
		a.shutdown(exitStop) // only what start got to
		return err
	}
	exit, err := a.run(ctx)
	a.shutdown(exit)
	return err
}

// app is one gateway process. It lives in three phases:
//
//   - start brings the parts up, each in a step of its own, in the order of
//     startSteps: every step may use what the steps before it made. A step
//     that fails ends start, and shutdown then stops what the steps before
//     it made.
//   - run serves until ctx ends (SIGINT, SIGTERM) or a successor has taken
//     the gateway over (SIGHUP, SIGUSR2), and drains the servers.
//   - shutdown stops the parts in the reverse order (see shutdown). On
//     exitStop it stops every env and removes the firewall table, if they
//     are this process's (ownsEnvs, ownsTable); on exitHandoff the envs,
//     their namespaces and the firewall table stay, as they are the
//     successor's now.
type app struct {
	cfg *Config
	log zerolog.Logger

	// Set by start's steps, each by one; zero where that step has not run.
	pred      *predecessor // in a successor: the process it takes over from
	lset      *listenerSet
	unlock    func()
	stopPprof func()
	nsm       *netns.Manager
	tmpls     []*lifecycle.Template
	fw        *netns.Firewall // nil with network.firewall: off
	envDNS    bool            // a DNS forwarder for the envs runs
	stopDNS   func()
	src       sources.Source
	metrics   *admin.Metrics
	launcher  *devserver.Launcher // runs the envs' dev servers
	envs      *lifecycle.Manager
	// ownsEnvs and ownsTable: the envs (with their namespaces) and the
	// firewall table are this process's to stop and remove. A successor
	// owns neither until it tells its predecessor it is ready (takeOver):
	// until then they are the predecessor's, which serves on with them
	// if this start fails. A gateway started afresh owns the table once
	// it has opened it, and the envs from the cluster step on (a start
	// that fails before leaves a crashed run's envs to the next start).
	ownsEnvs, ownsTable bool
	pv                  *previews
	remains             *envRemains  // what Destroy removes besides the data dir
	cluster             *clusterMode // cluster mode only (cluster.go)
	policy              *access.Policy
	newEnvs             *gateway.NewEnvLimit
	handler             atomic.Pointer[gateway.Handler] // read by the envs' BeforeStop
	front               http.Handler                    // the gateway with webhooks and dashboard in front
	cm                  *certs.Manager                  // nil with tls.mode: off
	servers             []httpServer
	tcps                *tcpListeners
	adm                 *adminServers
}

// httpServer is one of the gateway's HTTP servers and its listeners.
type httpServer struct {
	srv *http.Server
	lns []net.Listener
}

// exitMode says what shutdown leaves running.
type exitMode int

const (
	// exitStop stops every env and removes the instance's namespaces and
	// firewall table.
	exitStop exitMode = iota
	// exitHandoff leaves envs, namespaces and the firewall table to the
	// successor that took them over.
	exitHandoff
)

// run serves until ctx ends or a successor has taken over, and drains the
// servers: in-flight requests and upgraded connections get up to
// shutdown_timeout. It returns how shutdown must leave things.
func (a *app) run(ctx context.Context) (exitMode, error) {
	cfg := a.cfg
	var addrs []string
	for _, s := range a.servers {
		for _, ln := range s.lns {
			addrs = append(addrs, ln.Addr().String())
		}
	}
	a.log.Info().Strs("listen", addrs).Strs("domains", cfg.Domains).Str("tls", cfg.TLS.Mode).
		Str("instance", cfg.Instance).Str("config", cfg.file).Msg("envgate serving")

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	grace := time.Duration(cfg.ShutdownTimeout)
	var wg sync.WaitGroup
	errs := make([]error, len(a.servers))
	for i, s := range a.servers {
		wg.Go(func() {
			errs[i] = gateway.Serve(ctx, s.srv, s.lns, grace)
			cancel() // one listener failing stops the gateway
		})
	}
	var tcpErr error
	wg.Go(func() { tcpErr = a.tcps.serve(ctx, grace) })
	var adminErr error
	wg.Go(func() { adminErr = a.adm.serve(ctx, grace) })
	wg.Go(func() {
		// Upgraded connections (WebSockets) get the same grace as requests,
		// on a stop and on a restart alike: http.Server.Shutdown does not
		// wait for them.
		<-ctx.Done()
		sctx, scancel := context.WithTimeout(context.Background(), grace)
		defer scancel()
		a.handler.Load().Shutdown(sctx)
	})
	exit := exitStop
	if runUntilStop(ctx, cancel, a.pred, a.lset, a.envs, a.cluster, cfg, a.log) {
		exit = exitHandoff
	}
	a.log.Info().Msg("shutting down: draining requests")
	wg.Wait()
	return exit, errors.Join(append(errs, tcpErr, adminErr)...)
}

// shutdown stops what start made, in the reverse order of startSteps.
// Each step is a no-op for a part that start did not get to.
//
//  1. pid file: removed, unless handed off (it names the successor then)
//  2. certificates: certmagic's maintenance stops
//  3. HTTP(S) listeners: closed (run's servers closed theirs; this is for
//     a failed start)
//  4. envs: every env stopped and every namespace of the instance removed,
//     unless handed off or not ours (ownsEnvs: a successor's failed start
//     leaves them to its predecessor)
//  5. the dev-server launcher, once no env of ours runs through it
//  6. cluster: the session ends, and with it this node's owner keys,
//     after the envs stopped
//  7. previews, then the env source, after the envs that use them
//  8. firewall: the envs' DNS forwarder stops; the table goes, unless
//     handed off (a successor that took the envs took the table too) or
//     not ours (ownsTable)
//  9. pprof; then the locks in certmagic's storage this process still
//     holds (orders in flight: certs.ReleaseLocks), so other nodes and a
//     successor need not wait for them to go stale; then the instance
//     lock, last
func (a *app) shutdown(exit exitMode) {
	log := a.log
	if exit != exitHandoff {
		removePidFile(a.cfg) // only if it names this process
	}
	if a.cm != nil {
		a.cm.Close()
	}
	for _, s := range a.servers {
		for _, ln := range s.lns {
			ln.Close()
		}
	}
	switch {
	case !a.ownsEnvs && a.pred != nil && a.envs != nil:
		log.Info().Msg("envs and the firewall table left to the running gateway process")
	case !a.ownsEnvs:
	case exit == exitHandoff:
		log.Info().Msg("stopped; envs left running for the new gateway process")
	default:
		// Stop every env, then make sure no namespace of ours is left.
		sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := a.envs.Close(sctx); err != nil {
			log.Error().Err(err).Msg("stopping envs")
		}
		if left, err := a.nsm.GC(nil); err != nil || !left.Empty() {
			log.Warn().Err(err).Strs("namespaces", left.Namespaces).Msg("removed namespaces left after stopping envs")
		}
		log.Info().Msg("stopped")
	}
	if a.launcher != nil {
		a.launcher.Close()
	}
	a.cluster.Close() // nil-safe
	if a.pv != nil {
		a.pv.Close()
	}
	if a.src != nil {
		a.src.Close()
	}
	if a.stopDNS != nil {
		a.stopDNS()
	}
	if a.fw != nil && a.ownsTable && exit != exitHandoff {
		if err := a.fw.Close(); err != nil {
			log.Error().Err(err).Msg("removing the firewall")
		}
	}
	if a.stopPprof != nil {
		a.stopPprof()
	}
	if a.cm != nil {
		certs.ReleaseLocks(log)
	}
	if a.unlock != nil {
		a.unlock()
	}
}

// lockInstance takes an exclusive lock on the instance, so that two
// gateways (or a gateway and `envgate gc`) never manage the same
// namespaces at once. The lock dies with the process.
func lockInstance(cfg *Config) (func(), error) {
	dir := cfg.runDir()
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
