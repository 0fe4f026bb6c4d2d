package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/envgate/envgate/gateway"
	"github.com/envgate/envgate/gateway/access"
	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"
	"golang.org/x/net/http/httpguts"
)

// AccessConfig is one entry of access:, the list that says who may reach
// which envs. The first entry whose match fits the env name applies.
// With none: envs under localhost domains are open, those under other
// domains refused (403).
type AccessConfig struct {
	// Match is a glob over env names ("pr-*"); default "*", every name.
	Match string `yaml:"match"`
	// AllowCIDRs are client networks (or addresses) let in without
	// further checks: the real client, behind trusted_proxies. Checked
	// first. The only check that applies to tcp: listeners.
	AllowCIDRs []string `yaml:"allow_cidrs"`
	// Basic admits the users of an htpasswd file of bcrypt hashes
	// (htpasswd -B), read again when it changes. The env gets the user in
	// X-Forwarded-User, and never the password.
	Basic *struct {
		HtpasswdFile string `yaml:"htpasswd_file"`
	} `yaml:"basic"`
	// ForwardAuth asks an authentication service (oauth2-proxy, Authelia,
	// ...) about each request, as nginx's auth_request does: a 2xx lets it
	// through with copy_headers copied to the env, any other answer goes
	// back to the client as it is.
	ForwardAuth *struct {
		URL         string   `yaml:"url"`
		CopyHeaders []string `yaml:"copy_headers"`
		// Timeout bounds each subrequest; default 5s.
		Timeout Duration `yaml:"timeout"`
	} `yaml:"forward_auth"`
	// ShowOutput shows allowed clients the dev server's output on the
	// status, waiting and error pages. Default true on localhost domains,
	// false on others.
	ShowOutput *bool `yaml:"show_output"`
}

// validateAccess checks access:, limits.new_envs_per_client and that a
// public domain is not left open to every made-up name.
func (c *Config) validateAccess() []error {
	var errs []error
	add := func(p, msg string, args ...any) { errs = append(errs, c.errAt(p, msg, args...)) }
	for i, a := range c.Access {
		p := fmt.Sprintf("access.%d.", i)
		if _, err := path.Match(a.Match, ""); err != nil {
			add(p+"match", "%q is not a glob: %v", a.Match, err)
		}
		for j, s := range a.AllowCIDRs {
			if _, err := parseProxy(s); err != nil {
				add(fmt.Sprintf("%sallow_cidrs.%d", p, j), "%q: want a CIDR such as 10.0.0.0/8 or an address", s)
			}
		}
		if a.Basic != nil && a.ForwardAuth != nil {
			add(p+"basic", "set basic or forward_auth, not both")
		}
		if len(a.AllowCIDRs) == 0 && a.Basic == nil && a.ForwardAuth == nil {
			add(p+"match", "this entry lets nobody in: set allow_cidrs (0.0.0.0/0 and ::/0 for everyone), basic or forward_auth")
		}
		if b := a.Basic; b != nil {
			if !filepath.IsAbs(b.HtpasswdFile) {
				add(p+"basic.htpasswd_file", "%q: want the absolute path of an htpasswd file (make one with htpasswd -B -c FILE USER)", b.HtpasswdFile)
			} else if _, err := access.New(access.Config{Rules: []access.Rule{{Basic: &access.Basic{HtpasswdFile: b.HtpasswdFile}}}}); err != nil {
				// access.New wraps the file's error in one naming rule 0.
				if inner := errors.Unwrap(err); inner != nil {
					err = inner
				}
				add(p+"basic.htpasswd_file", "%w", err)
			}
		}
		if f := a.ForwardAuth; f != nil {
			if u, err := url.Parse(f.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				add(p+"forward_auth.url", "%q: want an http:// or https:// URL, e.g. http://127.0.0.1:4180/oauth2/auth", f.URL)
			}
			for j, h := range f.CopyHeaders {
				if !httpguts.ValidHeaderFieldName(h) {
					add(fmt.Sprintf("%sforward_auth.copy_headers.%d", p, j), "%q is not a header name", h)
				}
			}
		}
	}
	if _, _, _, err := c.newEnvsPerClient(); err != nil {
		add("limits.new_envs_per_client", "%v", err)
	}
	if c.Source.Kind == sourceAny && len(c.Access) == 0 {
		for i, d := range c.Domains {
			if !gateway.LocalDomain(d) {
				add(fmt.Sprintf("domains.%d", i), "%q is not a localhost domain: with source kind any, strangers could start envs of any name there; add access: entries saying who may reach its envs (with none, every request there is refused), or use a source of kind list, dir or git", d)
				break
			}
		}
	}
	return errs
}

// newEnvsPerClient parses limits.new_envs_per_client: "20/1m" (20 first
// starts a minute per client address, on every domain), "off", or unset:
// 20/1m on domains other than localhost ones. n is 0 when off.
func (c *Config) newEnvsPerClient() (n int, per time.Duration, onLocalhost bool, err error) {
	switch s := strings.TrimSpace(c.Limits.NewEnvsPerClient); s {
	case "":
		return 20, time.Minute, false, nil
	case "off", "0":
		return 0, 0, false, nil
	default:
		num, dur, ok := strings.Cut(s, "/")
		n, nerr := strconv.Atoi(strings.TrimSpace(num))
		per, derr := time.ParseDuration(strings.TrimSpace(dur))
		if !ok || nerr != nil || derr != nil || n <= 0 || per <= 0 {
			return 0, 0, false, fmt.Errorf("%q: want starts/period, e.g. 20/1m, or off", s)
		}
		return n, per, true, nil
	}
}

// newEnvLimit is the gateway's limit of new envs per client; nil if off.
func (c *Config) newEnvLimit() *gateway.NewEnvLimit {
	n, per, onLocalhost, err := c.newEnvsPerClient()
	if err != nil || n == 0 {
		return nil
	}
	if !onLocalhost {
		local := true
		for _, d := range c.Domains {
			local = local && gateway.LocalDomain(d)
		}
		if local {
			return nil
		}
	}
	return gateway.NewNewEnvLimit(n, per, onLocalhost)
}

// accessPolicy builds the access policy; validate has checked every entry.
func (c *Config) accessPolicy(log zerolog.Logger) (*access.Policy, error) {
	shares, err := access.LoadShareKey(filepath.Join(c.StateDir, access.ShareKeyFile))
	if err != nil {
		return nil, err
	}
	cfg := access.Config{TrustedProxies: c.trustedProxies(), Shares: shares, Log: log,
		Client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	for _, a := range c.Access {
		r := access.Rule{Match: a.Match, ShowOutput: a.ShowOutput}
		for _, s := range a.AllowCIDRs {
			if p, err := parseProxy(s); err == nil {
				r.AllowCIDRs = append(r.AllowCIDRs, p)
			}
		}
		if a.Basic != nil {
			r.Basic = &access.Basic{HtpasswdFile: a.Basic.HtpasswdFile}
		}
		if f := a.ForwardAuth; f != nil {
			r.ForwardAuth = &access.ForwardAuth{URL: f.URL, CopyHeaders: f.CopyHeaders, Timeout: time.Duration(f.Timeout)}
		}
		cfg.Rules = append(cfg.Rules, r)
	}
	p, err := access.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return p, nil
}

// maxEnvsDefault is limits.max_envs when the key is absent on a config
// with a domain other than localhost ones. Localhost-only configs keep
// no cap but the address pool: the only client is the developer, whose
// load tools make thousands of envs.
const maxEnvsDefault = 100

// setAccessDefaults sets limits.max_envs's default, which needs to know
// whether the key was written (0 there means no cap).
func (c *Config) setAccessDefaults() {
	if c.hasKey("limits", "max_envs") {
		return
	}
	for _, d := range c.Domains {
		if !gateway.LocalDomain(d) {
			c.Limits.MaxEnvs = maxEnvsDefault
			return
		}
	}
}

// hasKey reports whether the YAML document sets the key at keys.
func (c *Config) hasKey(keys ...string) bool {
	if c.root == nil || len(c.root.Content) == 0 {
		return false
	}
	n := c.root.Content[0]
	for _, k := range keys {
		if n.Kind != yaml.MappingNode {
			return false
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return false
		}
		n = next
	}
	return true
}
