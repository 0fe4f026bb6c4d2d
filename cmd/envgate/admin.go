package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/envgate/envgate/gateway/admin"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/envname"
	"github.com/rs/zerolog"
)

// adminServers are the admin API's listeners: the Unix socket, and the
// optional TCP ones (admin.listen with a token, admin.metrics).
type adminServers struct {
	api, metrics *http.Server
	apiLns       []net.Listener
	metricsLns   []net.Listener
	closeSocket  func()
	log          zerolog.Logger
}

// newAdminServers opens the admin listeners. The TCP ones come from lset,
// so a restart in place passes them on like the gateway's own.
func newAdminServers(cfg *Config, envs *lifecycle.Manager, cl admin.Cluster, metrics http.Handler, lset *listenerSet, log zerolog.Logger) (_ *adminServers, err error) {
	version, revision := buildVersion()
	h := admin.New(admin.Config{
		Envs:      envs,
		Version:   version,
		Revision:  revision,
		Instance:  cfg.Instance,
		ValidName: envname.Valid,
		// A reload is the restart in place of SIGHUP (handoff.go): a new
		// process reads the config and takes the envs and listeners over.
		Reload:  func() error { return syscall.Kill(os.Getpid(), syscall.SIGHUP) },
		Metrics: metrics,
		// Cluster mode: every node's envs, actions sent to their owner.
		Cluster: cl,
		Log:     log,
	})
	s := &adminServers{log: log}
	success := false
	defer func() {
		if !success {
			s.close()
		}
	}()
	sock, closeSock, err := admin.ListenUnix(cfg.Admin.Socket, cfg.Admin.Group)
	if err != nil {
		return nil, err
	}
	s.closeSocket = closeSock
	s.apiLns = append(s.apiLns, sock)
	var tcpAPI http.Handler = h
	if cfg.Admin.Listen != "" {
		tok, err := admin.ReadToken(cfg.Admin.TokenFile)
		if err != nil {
			return nil, err
		}
		lns, err := lset.listen(cfg.Admin.Listen)
		if err != nil {
			return nil, err
		}
		tcpAPI = admin.RequireToken(tok, h)
		s.apiLns = append(s.apiLns, lns...)
	}
	s.api = admin.NewServer(h)
	if cfg.Admin.Listen != "" {
		// The same server cannot tell its listeners apart: the token check
		// goes by the connection's local address.
		s.api.Handler = byListener(sock.Addr().Network(), h, tcpAPI)
	}
	if cfg.Admin.Metrics != "" && metrics != nil {
		lns, err := lset.listen(cfg.Admin.Metrics)
		if err != nil {
			return nil, err
		}
		s.metricsLns = lns
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metrics)
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
		s.metrics = admin.NewServer(mux)
	}
	success = true
	return s, nil
}

// byListener serves requests that came over a Unix socket with local and
// the rest with remote.
func byListener(unixNet string, local, remote http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && a.Network() == unixNet {
			local.ServeHTTP(w, r)
			return
		}
		remote.ServeHTTP(w, r)
	})
}

// serve runs the servers until ctx ends.
func (s *adminServers) serve(ctx context.Context, grace time.Duration) error {
	errc := make(chan error, 1)
	if s.metrics != nil {
		go func() { errc <- admin.Serve(ctx, s.metrics, s.metricsLns, grace) }()
	} else {
		errc <- nil
	}
	err := admin.Serve(ctx, s.api, s.apiLns, grace)
	s.close()
	return errors.Join(err, <-errc)
}

func (s *adminServers) close() {
	for _, ln := range append(s.apiLns, s.metricsLns...) {
		ln.Close()
	}
	if s.closeSocket != nil {
		s.closeSocket()
	}
}
