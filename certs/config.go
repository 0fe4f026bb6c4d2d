package certs

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/miekg/dns"
)

// Config says where certificates come from. Its zero value plus Domains and
// StateDir is usable: the mode then follows DefaultMode. Field comments give
// the default and the YAML key under `tls:` the gateway maps to them.
type Config struct {
	// Mode is acme, internal, files or off (tls.mode). Default: DefaultMode(Domains).
	Mode Mode
	// Domains are the parent domains of env hostnames: env "x" under
	// "dev.example.com" is x.dev.example.com (top-level `domains`).
	Domains []string
	// Hosts are the gateway's own host names that are no env's hostname
	// but get a certificate all the same: exactly these names (previews.host,
	// where webhooks arrive). Under tls.mode internal each must be a domain
	// or a name under one (the CA's name constraint); with tls.wildcard they
	// are managed beside the wildcards. Default: none.
	Hosts []string
	// StateDir holds certmagic's storage (StateDir/certs: certificates and
	// ACME accounts) and the internal CA (StateDir/ca). Required in acme and
	// internal modes (top-level `state_dir`).
	StateDir string

	// Email is the ACME account's contact address (tls.email). Optional.
	Email string
	// CA is the ACME directory URL (tls.ca). Default: Let's Encrypt production.
	CA string
	// CARoot is a PEM file with the ACME server's root, for private ACME
	// servers such as Pebble or step-ca (tls.ca_root). Default: system roots.
	CARoot string
	// EAB is the external account binding some CAs require (tls.eab).
	EAB *EAB
	// MaxIssuancesPerHour caps new ACME orders in any sliding hour
	// (tls.max_issuances_per_hour). Renewals do not count. Default 10, since
	// Let's Encrypt allows 50 certificates per registered domain per week;
	// -1 removes the cap.
	MaxIssuancesPerHour int
	// MaxOrdersPerWeek caps new ACME orders in any sliding week per
	// registered domain (public suffix plus one label), counted in
	// StateDir/acme-orders.json so that restarts do not reset it
	// (tls.max_orders_per_week). Renewals do not count; every attempt at a
	// new certificate does, failed ones included. Default 40, below Let's
	// Encrypt's 50 certificates per registered domain per week, which
	// production certificates of the same registered domain share; -1
	// removes the cap.
	MaxOrdersPerWeek int
	// AnyEnv says the AllowFunc allows every valid env label (the env
	// source is kind any). Per-name ACME is then refused (Validate reports
	// it at source.kind, and the certificate decision refuses every name
	// as well): anyone could make envgate order certificates for random
	// names and spend the registered domain's weekly budget. Use Wildcard,
	// or a source that lists its names.
	AnyEnv bool
	// Wildcard, when set in acme mode, obtains one *.<domain> certificate
	// per domain through DNS-01 instead of one certificate per env
	// (tls.wildcard).
	Wildcard *WildcardConfig

	// CertFile and KeyFile are the PEM certificate chain and key of files
	// mode (tls.cert_file, tls.key_file); both are watched and reloaded.
	CertFile, KeyFile string

	// DisableTLSALPN and DisableHTTP01 turn off one ACME challenge type
	// (tls.disable_tls_alpn, tls.disable_http01). Default: both enabled.
	DisableTLSALPN, DisableHTTP01 bool
	// OnEvent, if set, is told when a certificate is obtained, renewed
	// or fails (events.go), for metrics. It must not block.
	OnEvent func(CertEvent)
	// AltHTTPPort and AltTLSALPNPort are where certmagic would open its own
	// challenge listener when the gateway does not serve that port
	// (tls.alt_http_port, tls.alt_tls_alpn_port). Default 80 and 443.
	AltHTTPPort, AltTLSALPNPort int

	// RedirectHTTP sends plain-HTTP requests to https with a 308
	// (tls.redirect_http). Default true; ignored in off mode.
	RedirectHTTP *bool
	// HTTPSPort is the public port of the HTTPS listener, used in redirect
	// URLs (from listen.https). Default 443, which is left out of URLs.
	HTTPSPort int
}

// EAB is an ACME external account binding (tls.eab.key_id, tls.eab.mac_key).
type EAB struct {
	KeyID  string
	MACKey string // base64url, as the CA hands it out
}

// WildcardConfig obtains *.<domain> through DNS-01. The built-in provider
// speaks RFC 2136 dynamic updates (BIND, Knot, PowerDNS, Windows DNS). To use
// another DNS host, set Provider to any libdns provider (github.com/libdns/*
// implements AppendRecords and DeleteRecords for most of them) and map a
// config key to it in cmd/envgate.
type WildcardConfig struct {
	// Nameserver is the primary accepting updates, host:port (tls.wildcard.nameserver).
	Nameserver string
	// TSIGKeyName, TSIGAlgorithm and TSIGSecret (base64) sign the updates
	// (tls.wildcard.tsig_key_name, .tsig_algorithm, .tsig_secret). Algorithm
	// default hmac-sha256; no key means unsigned updates.
	TSIGKeyName, TSIGAlgorithm, TSIGSecret string
	// Resolvers answer the zone and propagation lookups, host:port
	// (tls.wildcard.resolvers). Default: the system's.
	Resolvers []string
	// PropagationTimeout bounds the wait for the TXT record to show on the
	// authoritative servers (tls.wildcard.propagation_timeout). Default 2m;
	// -1 skips the check.
	PropagationTimeout time.Duration
	// Provider, when set, replaces the RFC 2136 provider (programmatic only).
	Provider certmagic.DNSProvider
}

const (
	defaultMaxIssuancesPerHour = 10
	defaultMaxOrdersPerWeek    = 40
)

// DefaultMode is the mode an empty Config.Mode means: internal when every
// domain is localhost or under it (no public CA will sign those), acme
// otherwise.
func DefaultMode(domains []string) Mode {
	if len(domains) == 0 {
		return ModeInternal
	}
	for _, d := range domains {
		d = strings.TrimSuffix(strings.ToLower(d), ".")
		if d != "localhost" && !strings.HasSuffix(d, ".localhost") {
			return ModeACME
		}
	}
	return ModeInternal
}

func (c *Config) applyDefaults() {
	domains := make([]string, 0, len(c.Domains))
	for _, d := range c.Domains {
		domains = append(domains, strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), "."))
	}
	c.Domains = domains
	hosts := make([]string, 0, len(c.Hosts))
	for _, h := range c.Hosts {
		if h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), "."); h != "" && !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	c.Hosts = hosts
	if c.Mode == "" {
		c.Mode = DefaultMode(c.Domains)
	}
	if c.CA == "" {
		c.CA = certmagic.LetsEncryptProductionCA
	}
	if c.MaxIssuancesPerHour == 0 {
		c.MaxIssuancesPerHour = defaultMaxIssuancesPerHour
	}
	if c.MaxOrdersPerWeek == 0 {
		c.MaxOrdersPerWeek = defaultMaxOrdersPerWeek
	}
	if c.RedirectHTTP == nil {
		t := true
		c.RedirectHTTP = &t
	}
	if c.HTTPSPort == 0 {
		c.HTTPSPort = 443
	}
	if c.Wildcard != nil {
		w := *c.Wildcard
		if w.TSIGAlgorithm == "" {
			w.TSIGAlgorithm = dns.HmacSHA256
		}
		w.TSIGAlgorithm = dns.Fqdn(strings.ToLower(w.TSIGAlgorithm))
		if w.TSIGKeyName != "" {
			w.TSIGKeyName = dns.Fqdn(strings.ToLower(w.TSIGKeyName))
		}
		c.Wildcard = &w
	}
}

// Validate reports the first problem with c as a *FieldError, which names
// the config key ("tls.email: ..."). Unset fields are checked as their
// defaults.
func (c *Config) Validate() error {
	v := *c
	v.applyDefaults()
	return v.validate()
}

// FieldError is a problem with one field of a Config, named by the
// config key it comes from (tls.email, domains, previews.host).
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

func (e *FieldError) Unwrap() error { return e.Err }

// fieldError is a *FieldError for field, its message as fmt.Errorf's.
func fieldError(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

func (c *Config) validate() error {
	switch c.Mode {
	case ModeACME, ModeInternal, ModeFiles, ModeOff:
	default:
		return fieldError("tls.mode", "%q is not one of acme, internal, files, off", c.Mode)
	}
	if c.Mode == ModeOff {
		return nil
	}
	if len(c.Domains) == 0 && c.Mode != ModeFiles {
		return fieldError("domains", "at least one domain is needed for tls.mode %s", c.Mode)
	}
	for _, d := range c.Domains {
		if _, ok := dns.IsDomainName(d); !ok || d == "" || strings.Contains(d, "*") || strings.Contains(d, "..") {
			return fieldError("domains", "%q is not a domain name", d)
		}
	}
	for _, h := range c.Hosts {
		if _, ok := dns.IsDomainName(h); !ok || strings.Contains(h, "*") || strings.Contains(h, "..") {
			return fieldError("previews.host", "%q is not a host name", h)
		}
		if c.Mode == ModeInternal && !slices.ContainsFunc(c.Domains, func(d string) bool { return h == d || strings.HasSuffix(h, "."+d) }) {
			return fieldError("previews.host", "%q is not under a configured domain %v, and the internal CA signs only names under those (its root is name-constrained); use a host under one", h, c.Domains)
		}
		if c.Mode == ModeACME && (h == "localhost" || strings.HasSuffix(h, ".localhost")) {
			return fieldError("previews.host", "no ACME CA signs %q; use tls.mode internal", h)
		}
	}
	if c.HTTPSPort < 1 || c.HTTPSPort > 65535 {
		return fieldError("listen.https", "port %d out of range", c.HTTPSPort)
	}
	switch c.Mode {
	case ModeInternal:
		if c.StateDir == "" {
			return fieldError("state_dir", "required for tls.mode internal (the CA's root lives there)")
		}
	case ModeFiles:
		if c.CertFile == "" {
			return fieldError("tls.cert_file", "required for tls.mode files")
		}
		if c.KeyFile == "" {
			return fieldError("tls.key_file", "required for tls.mode files")
		}
	case ModeACME:
		return c.validateACME()
	}
	return nil
}

func (c *Config) validateACME() error {
	if c.StateDir == "" {
		return fieldError("state_dir", "required for tls.mode acme (certificates and accounts are stored there)")
	}
	for _, d := range c.Domains {
		if d == "localhost" || strings.HasSuffix(d, ".localhost") {
			return fieldError("tls.mode", "no ACME CA signs %q; use tls.mode internal", d)
		}
	}
	if c.Email != "" && (!strings.Contains(c.Email, "@") || strings.ContainsAny(c.Email, " \t\r\n")) {
		return fieldError("tls.email", "%q is not an email address", c.Email)
	}
	u, err := url.Parse(c.CA)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fieldError("tls.ca", "%q is not an https URL of an ACME directory", c.CA)
	}
	if c.EAB != nil {
		if c.EAB.KeyID == "" || c.EAB.MACKey == "" {
			return fieldError("tls.eab", "key_id and mac_key are both required")
		}
		if _, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(c.EAB.MACKey, "=")); err != nil {
			return fieldError("tls.eab.mac_key", "not base64url: %w", err)
		}
	}
	if c.MaxIssuancesPerHour < -1 {
		return fieldError("tls.max_issuances_per_hour", "%d; use a positive number, or -1 for no cap", c.MaxIssuancesPerHour)
	}
	if c.MaxOrdersPerWeek < -1 {
		return fieldError("tls.max_orders_per_week", "%d; use a positive number, or -1 for no cap", c.MaxOrdersPerWeek)
	}
	for name, p := range map[string]int{"tls.alt_http_port": c.AltHTTPPort, "tls.alt_tls_alpn_port": c.AltTLSALPNPort} {
		if p < 0 || p > 65535 {
			return fieldError(name, "port %d out of range", p)
		}
	}
	if c.Wildcard == nil {
		if c.DisableHTTP01 && c.DisableTLSALPN {
			return fieldError("tls.disable_http01", "with tls.disable_tls_alpn too no challenge is left; enable one or set tls.wildcard")
		}
		if c.AnyEnv {
			return errPerNameAnySource
		}
		return nil
	}
	return c.Wildcard.validate()
}

// errPerNameAnySource is Validate's answer to per-name ACME with an env
// source that allows every name.
var errPerNameAnySource = fieldError("source.kind", "any allows every valid name, and with per-name ACME (tls.mode acme without tls.wildcard) anyone could make envgate order a certificate for a random name, spending the registered domain's weekly certificate budget (production's included); set tls.wildcard (one *.<domain> certificate through DNS-01), or a source of kind list, dir or git, or tls.mode internal or files")

func (w *WildcardConfig) validate() error {
	if w.Provider != nil {
		return nil
	}
	if _, _, err := net.SplitHostPort(w.Nameserver); err != nil {
		return fieldError("tls.wildcard.nameserver", "%q is not host:port: %w", w.Nameserver, err)
	}
	if (w.TSIGKeyName == "") != (w.TSIGSecret == "") {
		return fieldError("tls.wildcard.tsig_key_name", "tsig_key_name and tsig_secret go together")
	}
	if w.TSIGSecret != "" {
		if _, err := base64.StdEncoding.DecodeString(w.TSIGSecret); err != nil {
			return fieldError("tls.wildcard.tsig_secret", "not base64: %w", err)
		}
	}
	switch w.TSIGAlgorithm {
	case dns.HmacSHA1, dns.HmacSHA224, dns.HmacSHA256, dns.HmacSHA384, dns.HmacSHA512:
	default:
		return fieldError("tls.wildcard.tsig_algorithm", "%q unsupported; use hmac-sha256 (or hmac-sha1/224/384/512)", w.TSIGAlgorithm)
	}
	for _, r := range w.Resolvers {
		if _, _, err := net.SplitHostPort(r); err != nil {
			return fieldError("tls.wildcard.resolvers", "%q is not host:port", r)
		}
	}
	return nil
}
