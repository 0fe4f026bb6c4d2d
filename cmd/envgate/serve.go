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
	"sync"
	"syscall"
	"time"

	"github.com/envgate/envgate/certs"
	"github.com/envgate/envgate/gateway"
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

On start it removes whatever a crashed earlier run of the same instance left
behind (namespaces, veths, processes). On SIGINT/SIGTERM it stops accepting,
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
	unlock, err := lockInstance(cfg)
	if err != nil {
		return err
	}
	defer unlock()

	nsm, err := netns.New(netns.Config{Prefix: cfg.Instance, Pool: netip.MustParsePrefix(cfg.Network.Pool)})
	if err != nil {
		return err
	}
	if left, err := nsm.GC(nil); err != nil {
		log.Error().Err(err).Msg("cleaning up after an earlier run")
	} else if !left.Empty() {
		log.Warn().Strs("namespaces", left.Namespaces).Strs("links", left.Links).Int("processes", left.Processes).
			Msg("removed what an earlier run left behind")
	}

	tmpls, err := cfg.lifecycleTemplates()
	if err != nil {
		return err
	}
	envs, err := lifecycle.New(lifecycle.Config{
		Templates: tmpls,
		DataRoot:  filepath.Join(cfg.StateDir, "envs"),
		Network:   lifecycle.NetnsNetwork{M: nsm},
		Log:       log.With().Str("component", "lifecycle").Logger(),
	})
	if err != nil {
		return err
	}
	defer func() {
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

	h, err := gateway.NewHandler(gateway.Config{
		Domains: cfg.Domains,
		Envs:    envs,
		Log:     log.With().Str("component", "gateway").Logger(),
	})
	if err != nil {
		return err
	}

	var httpHandler http.Handler = h
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

	if certs.Mode(cfg.TLS.Mode) != certs.ModeOff {
		cm, err := certs.New(cfg.certsConfig(), nil, log.With().Str("component", "certs").Logger())
		if err != nil {
			return err
		}
		defer cm.Close()
		httpHandler = cm.HTTPHandler(h)
		lns, err := gateway.Listen(cfg.Listen.HTTPS, log)
		if err != nil {
			return err
		}
		srv := gateway.NewHTTPServer(h, log.With().Str("component", "https").Logger())
		srv.TLSConfig = cm.TLSConfig()
		for i, ln := range lns {
			lns[i] = tls.NewListener(ln, srv.TLSConfig)
		}
		servers = append(servers, server{srv, lns})
	}
	lns, err := gateway.Listen(cfg.Listen.HTTP, log)
	if err != nil {
		return err
	}
	servers = append(servers, server{gateway.NewHTTPServer(httpHandler, log.With().Str("component", "http").Logger()), lns})

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
	<-ctx.Done()
	log.Info().Msg("shutting down: draining requests")
	wg.Wait()
	return errors.Join(errs...)
}

// certsConfig maps the tls: section to certs.Config.
func (c *Config) certsConfig() certs.Config {
	cc := certs.Config{
		Mode:                certs.Mode(c.TLS.Mode),
		Domains:             c.Domains,
		StateDir:            c.StateDir,
		Email:               c.TLS.Email,
		CA:                  c.TLS.CA,
		CARoot:              c.TLS.CARoot,
		MaxIssuancesPerHour: c.TLS.MaxIssuancesPerHour,
		CertFile:            c.TLS.CertFile,
		KeyFile:             c.TLS.KeyFile,
		RedirectHTTP:        c.TLS.RedirectHTTP,
		DisableHTTP01:       c.TLS.DisableHTTP01,
		DisableTLSALPN:      c.TLS.DisableTLSALPN,
	}
	if c.TLS.EAB != nil {
		cc.EAB = &certs.EAB{KeyID: c.TLS.EAB.KeyID, MACKey: c.TLS.EAB.MACKey}
	}
	if _, port, err := net.SplitHostPort(c.Listen.HTTPS); err == nil {
		fmt.Sscan(port, &cc.HTTPSPort)
	}
	return cc
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
