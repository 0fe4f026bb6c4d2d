// Package certs gives the gateway its TLS certificates.
//
// It owns four modes: on-demand ACME through certmagic (one certificate per
// env hostname, or one wildcard per domain through DNS-01), an internal
// certificate authority for laptops and private networks, a static
// certificate and key reloaded when the files change, and off. For each it
// offers a *tls.Config for the HTTPS listener and an http.Handler for the
// plain-HTTP listener (ACME HTTP-01 challenges, else a redirect to https).
//
// It must never ask a CA for a name that is not a valid env label under a
// configured domain and allowed by the gateway: the decision happens before
// any ACME traffic, and new orders are capped per hour and, on file, per
// registered domain and week on top of that. Per-name ACME for an env
// source that allows every name is refused outright.
// It knows nothing about envs beyond the AllowFunc the gateway passes in.
package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/rs/zerolog"
)

// Mode selects where certificates come from.
type Mode string

// The modes; the zero value picks DefaultMode(Domains).
const (
	ModeACME     Mode = "acme"
	ModeInternal Mode = "internal"
	ModeFiles    Mode = "files"
	ModeOff      Mode = "off"
)

// AllowFunc reports whether a certificate may be issued for the env named
// env (the first DNS label of the server name); a non-nil error refuses. The
// gateway supplies it (the lifecycle's allow check). The package checks the
// label syntax and the domain suffix before calling it, so it only ever sees
// valid labels. It is called during TLS handshakes: keep it fast.
type AllowFunc func(ctx context.Context, env string) error

// Manager serves certificates for one gateway according to its Config.
// Make one with New and Close it when done.
type Manager struct {
	cfg   Config
	allow AllowFunc
	log   zerolog.Logger

	tlsConfig *tls.Config // nil in off mode
	acme      *acmeManager
	internal  *internalCA
	files     *fileWatcher

	closeOnce sync.Once
	closeErr  error
}

// New validates cfg, fills its defaults and starts the mode's machinery
// (certmagic cache and maintenance, the internal CA, or the file watcher).
// allow may be nil, which allows every valid env label.
func New(cfg Config, allow AllowFunc, log zerolog.Logger) (*Manager, error) {
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if allow == nil {
		allow = func(context.Context, string) error { return nil }
	}
	m := &Manager{cfg: cfg, allow: allow, log: log.With().Str("component", "certs").Str("mode", string(cfg.Mode)).Logger()}
	var err error
	switch cfg.Mode {
	case ModeACME:
		m.acme, err = newACMEManager(&m.cfg, m.decide, m.log)
		if err == nil {
			m.tlsConfig = m.acme.tlsConfig()
		}
	case ModeInternal:
		m.internal, err = newInternalCA(&m.cfg, m.decide, m.log)
		if err == nil {
			m.tlsConfig = baseTLSConfig(m.internal.getCertificate)
		}
	case ModeFiles:
		m.files, err = newFileWatcher(cfg.CertFile, cfg.KeyFile, cfg.Domains, m.log)
		if err == nil {
			m.tlsConfig = baseTLSConfig(m.files.getCertificate)
		}
	case ModeOff:
	}
	if err != nil {
		return nil, err
	}
	m.log.Info().Strs("domains", cfg.Domains).Msg("certificates ready")
	return m, nil
}

// baseTLSConfig is what every mode serves: HTTP/2 first, TLS 1.2 at least.
func baseTLSConfig(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: get,
	}
}

// Mode reports the mode in force after defaults were applied.
func (m *Manager) Mode() Mode { return m.cfg.Mode }

// TLSConfig returns the configuration for the HTTPS listener: GetCertificate
// set, NextProtos h2 and http/1.1 (plus acme-tls/1 in acme mode, so the
// TLS-ALPN-01 challenge is answered on the same listener). It returns nil in
// off mode. Each call returns a fresh clone the caller may modify.
func (m *Manager) TLSConfig() *tls.Config {
	if m.tlsConfig == nil {
		return nil
	}
	return m.tlsConfig.Clone()
}

// HTTPHandler returns the handler for the plain-HTTP listener. It answers
// ACME HTTP-01 challenges (acme mode), redirects everything else to https
// with 308 (keeping method and body) unless Config.RedirectHTTP is false or
// the mode is off, in which case it calls fallback. A nil fallback answers
// 404.
func (m *Manager) HTTPHandler(fallback http.Handler) http.Handler {
	if fallback == nil {
		fallback = http.NotFoundHandler()
	}
	next := fallback
	if m.cfg.Mode != ModeOff && *m.cfg.RedirectHTTP {
		next = redirectHandler(m.cfg.HTTPSPort, fallback)
	}
	if m.acme != nil {
		return m.acme.httpChallengeHandler(next)
	}
	return next
}

// redirectHandler sends every request to the same host and path on https.
// A request without a usable Host goes to fallback: there is nothing to
// redirect to.
func redirectHandler(httpsPort int, fallback http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" {
			fallback.ServeHTTP(w, r)
			return
		}
		if httpsPort != 443 {
			host = net.JoinHostPort(host, strconv.Itoa(httpsPort))
		} else if net.ParseIP(host) != nil && net.ParseIP(host).To4() == nil {
			host = "[" + host + "]"
		}
		target := "https://" + host + r.URL.RequestURI()
		http.Redirect(w, r, target, http.StatusPermanentRedirect)
	})
}

// RootCertPath returns the path of the internal CA's root certificate (PEM),
// or "" in any other mode.
func (m *Manager) RootCertPath() string {
	if m.internal == nil {
		return ""
	}
	return m.internal.rootCertPath
}

// Close stops the file watcher and certmagic's maintenance goroutines and
// waits for them. It is safe to call more than once.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		var errs []error
		if m.acme != nil {
			errs = append(errs, m.acme.close())
		}
		if m.files != nil {
			errs = append(errs, m.files.close())
		}
		m.closeErr = errors.Join(errs...)
	})
	return m.closeErr
}

// ReleaseLocks lets go of the locks in certmagic's storage that this
// process holds, those of orders and renewals still in flight (an
// on-demand order goes on after Close, for as long as the handshake that
// started it). Without it a lock file stays behind the process and the
// other nodes of a cluster, and a successor after a handoff, wait for it
// to go stale (10 s) before they order, and then race to take it over.
// Call it only right before the process exits, after Close: the orders
// it lets go of must not go on.
func ReleaseLocks(log zerolog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	certmagic.CleanUpOwnLocks(ctx, newZapLogger(log))
}

// decide is the gate in front of every issuance: the name must be one of
// Config.Hosts, or a valid env label under a configured domain whose env
// the gateway allows.
func (m *Manager) decide(ctx context.Context, name string) error {
	if m.cfg.Mode == ModeACME && m.cfg.Wildcard == nil && m.cfg.AnyEnv {
		// Validate refuses this configuration; this holds should a caller
		// get past it.
		m.log.Debug().Str("server_name", name).Msg("certificate refused: per-name ACME with an env source that allows every name")
		return fmt.Errorf("certs: %q: %w", name, ErrPerNameAnySource)
	}
	if m.isHost(name) {
		return nil // Config.Hosts: the gateway's own, exactly as configured
	}
	env, ok := EnvFromServerName(name, m.cfg.Domains)
	if !ok {
		m.log.Debug().Str("server_name", name).Msg("certificate refused: not an env hostname")
		return fmt.Errorf("certs: %q: %w", name, ErrNameNotAllowed)
	}
	if err := m.allow(ctx, env); err != nil {
		m.log.Debug().Err(err).Str("server_name", name).Str("env", env).Msg("certificate refused: env not allowed")
		return fmt.Errorf("certs: env %q not allowed: %w", env, err)
	}
	return nil
}

// isHost reports whether server name is exactly one of Config.Hosts (case
// and one trailing dot aside).
func (m *Manager) isHost(name string) bool {
	name = strings.TrimSuffix(name, ".")
	for _, h := range m.cfg.Hosts {
		if strings.EqualFold(name, h) {
			return true
		}
	}
	return false
}
