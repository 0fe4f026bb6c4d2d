package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"
	"github.com/rs/zerolog"
)

// acmeManager wraps one certmagic cache and config. Each Manager gets its
// own: certmagic's package-level Default config and cache would be shared by
// every Manager in the process (tests make several) and never stopped.
type acmeManager struct {
	log    zerolog.Logger
	cache  *certmagic.Cache
	magic  *certmagic.Config
	issuer *certmagic.ACMEIssuer
	cap    *issuanceCap
	weekly *orderLedger

	stop  context.CancelFunc // ends background wildcard management
	event func(CertEvent)    // Config.event
}

// acmeRequestHook, when set by a test before New, sees every HTTP request
// the ACME client sends.
var acmeRequestHook func(*http.Request)

func newACMEManager(cfg *Config, decide func(context.Context, string) error, log zerolog.Logger) (*acmeManager, error) {
	var roots *x509.CertPool
	if cfg.CARoot != "" {
		pem, err := os.ReadFile(cfg.CARoot)
		if err != nil {
			return nil, fmt.Errorf("certs: tls.ca_root: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("certs: tls.ca_root: no PEM certificate in %s", cfg.CARoot)
		}
	}

	weekly, err := newOrderLedger(cfg.StateDir, cfg.MaxOrdersPerWeek, log)
	if err != nil {
		return nil, err
	}
	zl := newZapLogger(log)
	a := &acmeManager{log: log, cap: newIssuanceCap(cfg.MaxIssuancesPerHour, log), weekly: weekly, event: cfg.event}
	var magic *certmagic.Config
	a.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return magic, nil },
		Logger:           zl,
	})
	template := certmagic.Config{
		Storage:        &certmagic.FileStorage{Path: filepath.Join(cfg.StateDir, "certs")},
		Logger:         zl,
		OnEvent:        a.onEvent,
		ShouldEmitFunc: shouldEmit,
	}
	if cfg.Wildcard == nil {
		template.OnDemand = &certmagic.OnDemandConfig{DecisionFunc: decide}
	}
	magic = certmagic.New(a.cache, template)
	a.magic = magic

	issuer := certmagic.ACMEIssuer{
		CA:                      cfg.CA,
		Email:                   cfg.Email,
		Agreed:                  true,
		DisableHTTPChallenge:    cfg.DisableHTTP01 || cfg.Wildcard != nil,
		DisableTLSALPNChallenge: cfg.DisableTLSALPN || cfg.Wildcard != nil,
		AltHTTPPort:             cfg.AltHTTPPort,
		AltTLSALPNPort:          cfg.AltTLSALPNPort,
		TrustedRoots:            roots,
		Logger:                  zl,
	}
	if cfg.EAB != nil {
		issuer.ExternalAccount = &acme.EAB{KeyID: cfg.EAB.KeyID, MACKey: cfg.EAB.MACKey}
	}
	if hook := acmeRequestHook; hook != nil {
		issuer.HTTPProxy = func(r *http.Request) (*url.URL, error) { hook(r); return http.ProxyFromEnvironment(r) }
	}
	if cfg.Wildcard != nil {
		issuer.DNS01Solver = newDNS01Solver(cfg.Wildcard, zl)
	}
	a.issuer = certmagic.NewACMEIssuer(magic, issuer)
	magic.Issuers = []certmagic.Issuer{a.issuer}

	ctx, cancel := context.WithCancel(context.Background())
	a.stop = cancel
	if cfg.Wildcard != nil {
		names := make([]string, 0, len(cfg.Domains)+len(cfg.Hosts))
		for _, d := range cfg.Domains {
			names = append(names, "*."+d)
		}
		// A wildcard covers one label under its domain, not the bare
		// domain, and without on-demand no decision is ever asked: the
		// gateway's own hosts the wildcards miss are managed too.
		for _, h := range cfg.Hosts {
			if _, ok := EnvFromServerName(h, cfg.Domains); !ok {
				names = append(names, h)
			}
		}
		// Async: a DNS or CA outage must not keep the gateway from serving
		// plain HTTP; certmagic retries with backoff and loads a stored
		// certificate at once when there is one.
		if err := magic.ManageAsync(ctx, names); err != nil {
			cancel()
			a.cache.Stop()
			return nil, fmt.Errorf("certs: manage wildcard %v: %w", names, err)
		}
	}
	return a, nil
}

func (a *acmeManager) tlsConfig() *tls.Config {
	c := baseTLSConfig(a.magic.GetCertificate)
	c.NextProtos = append(c.NextProtos, a.magic.TLSConfig().NextProtos...) // acme-tls/1
	return c
}

func (a *acmeManager) httpChallengeHandler(next http.Handler) http.Handler {
	return a.issuer.HTTPChallengeHandler(next)
}

func (a *acmeManager) close() error {
	a.stop()
	a.cache.Stop()
	return nil
}

// shouldEmit keeps certmagic from building event data on the handshake hot
// path for events onEvent ignores.
func shouldEmit(event string) bool {
	switch event {
	case "cert_obtaining", "cert_obtained", "cert_failed", "cert_ocsp_revoked":
		return true
	}
	return false
}

// onEvent logs certificate events and enforces the issuance caps. They
// sit on cert_obtaining rather than in the DecisionFunc because certmagic
// asks the DecisionFunc before loading a stored certificate too; only
// cert_obtaining (without renewal) means a new order is about to be placed.
// certmagic emits it at every attempt, so a retried order counts each
// time. The hourly cap goes first: it only lives in memory, while a slot
// of the weekly one, once taken, is on file for a week.
func (a *acmeManager) onEvent(ctx context.Context, event string, data map[string]any) error {
	name, _ := data["identifier"].(string)
	renewal, _ := data["renewal"].(bool)
	switch event {
	case "cert_obtaining":
		if !renewal && !a.cap.take(time.Now(), name) {
			// ErrNoRetry: certmagic would otherwise retry within the
			// handshake's deadline and hold the client for minutes.
			return certmagic.ErrNoRetry{Err: fmt.Errorf("certs: %s: %w", name, ErrIssuanceCap)}
		}
		if !renewal && !a.weekly.take(ctx, time.Now(), name) {
			return certmagic.ErrNoRetry{Err: fmt.Errorf("certs: %s: %w", name, ErrWeeklyCap)}
		}
		a.log.Debug().Str("server_name", name).Bool("renewal", renewal).Msg("ordering certificate")
	case "cert_obtained":
		msg, ev := "certificate obtained", CertObtained
		if renewal {
			msg, ev = "certificate renewed", CertRenewed
		}
		a.event(ev)
		issuer, _ := data["issuer"].(string)
		a.log.Info().Str("server_name", name).Str("issuer", issuer).Msg(msg)
	case "cert_failed":
		err, _ := data["error"].(error)
		if err == nil {
			err = errors.New("unknown error")
		}
		a.event(CertFailed)
		a.log.Error().Err(err).Str("server_name", name).Bool("renewal", renewal).Msg("certificate failed")
	case "cert_ocsp_revoked":
		a.log.Warn().Interface("subjects", data["subjects"]).Msg("certificate revoked; replacing it")
	}
	return nil
}
