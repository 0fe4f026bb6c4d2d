package main

import (
	"errors"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/envgate/envgate/certs"
)

// validateTLS checks the tls: section by certs' own rules (certs.Config's
// Validate), turning its *certs.FieldError into a FieldError that names
// the file and line of the key at fault.
func (c *Config) validateTLS() []*FieldError {
	errs := c.loadSecretFiles()
	if w := c.TLS.Wildcard; w != nil {
		if _, err := w.propagationTimeout(); err != nil {
			errs = append(errs, c.errAt("tls.wildcard.propagation_timeout", "%v", err))
		}
	}
	if certs.Mode(c.TLS.Mode) == certs.ModeACME && c.TLS.CARoot != "" {
		// certs reads it only when the gateway starts; say so now.
		if _, err := os.Stat(c.TLS.CARoot); err != nil {
			errs = append(errs, c.errAt("tls.ca_root", "%v", err))
		}
	}
	cc := c.certsConfig()
	if err := cc.Validate(); err != nil {
		field := "tls"
		if fe, ok := errors.AsType[*certs.FieldError](err); ok {
			field, err = fe.Field, fe.Err
		}
		e := c.errAt(field, "%w", err)
		if e.Line == 0 && field == "source.kind" {
			// kind any by default: point at the per-name ACME half.
			e.Line = lineOf(c.root, "tls.mode")
		}
		errs = append(errs, e)
	}
	return errs
}

// reported tells whether errs already hold a FieldError for field or for
// a key under it, so one mistake is not reported twice (once by this
// package's checks and once by certs').
func reported(errs []error, field string) bool {
	for _, err := range errs {
		ce, ok := err.(*FieldError)
		if !ok {
			continue
		}
		if ce.Field == field || strings.HasPrefix(ce.Field, field+".") || strings.HasPrefix(ce.Field, field+"[") {
			return true
		}
	}
	return false
}

// certsConfig maps the tls: section (and domains, state_dir, listen) to
// certs.Config.
func (c *Config) certsConfig() certs.Config {
	cc := certs.Config{
		Mode:                certs.Mode(c.TLS.Mode),
		Domains:             c.Domains,
		StateDir:            c.StateDir,
		Email:               c.TLS.Email,
		CA:                  c.TLS.CA,
		CARoot:              c.TLS.CARoot,
		MaxIssuancesPerHour: c.TLS.MaxIssuancesPerHour,
		MaxOrdersPerWeek:    c.TLS.MaxOrdersPerWeek,
		// validateSource defaults the kind to any, maybe after this runs.
		AnyEnv:         c.Source.Kind == "" || c.Source.Kind == sourceAny,
		CertFile:       c.TLS.CertFile,
		KeyFile:        c.TLS.KeyFile,
		RedirectHTTP:   c.TLS.RedirectHTTP,
		DisableHTTP01:  c.TLS.DisableHTTP01,
		DisableTLSALPN: c.TLS.DisableTLSALPN,
		AltHTTPPort:    c.TLS.AltHTTPPort,
		AltTLSALPNPort: c.TLS.AltTLSALPNPort,
		HTTPSPort:      listenPort(c.Listen.HTTPS),
		// previews.host, where webhooks arrive (config_previews.go).
		Hosts: c.webhookHosts(),
	}
	// The gateway answers both challenge types on its own listeners;
	// pointing certmagic at those ports means it finds them taken and
	// opens nothing of its own.
	if cc.AltHTTPPort == 0 {
		cc.AltHTTPPort = listenPort(c.Listen.HTTP)
	}
	if cc.AltTLSALPNPort == 0 {
		cc.AltTLSALPNPort = cc.HTTPSPort
	}
	if c.TLS.EAB != nil {
		cc.EAB = &certs.EAB{KeyID: c.TLS.EAB.KeyID, MACKey: c.TLS.EAB.MACKey}
	}
	if w := c.TLS.Wildcard; w != nil {
		timeout, _ := w.propagationTimeout() // validated in validateTLS
		cc.Wildcard = &certs.WildcardConfig{
			Nameserver:         w.Nameserver,
			TSIGKeyName:        w.TSIGKeyName,
			TSIGAlgorithm:      w.TSIGAlgorithm,
			TSIGSecret:         w.TSIGSecret,
			Resolvers:          w.Resolvers,
			PropagationTimeout: timeout,
		}
	}
	return cc
}

// listenPort is the numeric port of a listen address, or 0 (certs'
// default) when there is none.
func listenPort(addr string) int {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return 0
	}
	return p
}
