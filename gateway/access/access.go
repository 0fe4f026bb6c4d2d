// Package access decides who may reach an env, before the gateway does
// anything else for a request: no start, no waiting page, no status
// output for a client it refuses.
//
// A Policy is an ordered list of rules; the first whose Match fits the
// env name applies. A rule allows a client by its address (AllowCIDRs,
// checked first), by a user of an htpasswd file (Basic), or by the answer
// of an authentication service (ForwardAuth, the convention of
// oauth2-proxy and nginx's auth_request). With no rule for the env, envs
// under localhost domains are open and every other one is refused: a
// gateway on a public domain is closed until its configuration says who
// may come in.
//
// The package knows nothing of envs beyond their names; it never starts,
// stops or looks up one. It must never trust a client's forwarding
// headers unless the client is a configured trusted proxy.
package access

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"path"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// UserHeader carries the user a Basic rule authenticated to the env, as
// oauth2-proxy's X-Forwarded-User does.
const UserHeader = "X-Forwarded-User"

// Rule is one entry of the access list.
type Rule struct {
	// Match is a glob (path.Match syntax) over env names; "" or "*"
	// matches every name.
	Match string
	// AllowCIDRs are the client networks allowed without further
	// checks. The client is the real one: behind a trusted proxy, the
	// nearest address in X-Forwarded-For that is not a trusted proxy.
	AllowCIDRs []netip.Prefix
	// Basic, when set, admits the users of an htpasswd file.
	Basic *Basic
	// ForwardAuth, when set, asks an authentication service.
	ForwardAuth *ForwardAuth
	// ShowOutput says whether clients this rule allows see the dev
	// server's output on the status, waiting and error pages. Default
	// (nil): true on localhost domains, false on others.
	ShowOutput *bool
}

// Basic is a Rule's HTTP basic authentication.
type Basic struct {
	// HtpasswdFile holds user:bcrypt-hash lines (htpasswd -B). It is
	// read again when it changes, looked at at most once a second.
	HtpasswdFile string
}

// ForwardAuth is a Rule's subrequest to an authentication service.
type ForwardAuth struct {
	// URL is asked with GET for every request to the env, with the
	// original request in X-Forwarded-Method, -Proto, -Host, -Uri and
	// -For, and its Cookie and Authorization headers. A 2xx allows the
	// request; any other answer goes back to the client as it is.
	URL string
	// CopyHeaders are headers of a 2xx answer passed on to the env
	// (X-Auth-Request-User, X-Auth-Request-Email). A client's own
	// headers of these names never reach the env.
	CopyHeaders []string
	// Timeout bounds the subrequest; default 5s.
	Timeout time.Duration
}

// Config configures a Policy.
type Config struct {
	Rules []Rule
	// TrustedProxies are the networks whose X-Forwarded-For is believed
	// when working out the client's address.
	TrustedProxies []netip.Prefix
	// Client makes forward-auth subrequests; default a client that
	// follows no redirects (the service's 302 is for the browser).
	Client *http.Client
	// Shares, when set, admits the holders of a share link's cookie.
	Shares *ShareKey
	// Log receives htpasswd reload failures (warn).
	Log zerolog.Logger
}

// Policy decides requests. Its methods are safe for concurrent use.
type Policy struct {
	rules   []*rule
	trusted []netip.Prefix
	client  *http.Client
	shares  *ShareKey
	// strip are the request headers only the gateway may set: every
	// rule's CopyHeaders, and UserHeader if a rule uses Basic.
	strip []string
}

type rule struct {
	Rule
	any    bool // Match fits every name
	users  *htpasswd
	copied []string // ForwardAuth.CopyHeaders, canonical
}

// New checks cfg and returns its Policy. Htpasswd files are read here: a
// missing or malformed one is an error.
func New(cfg Config) (*Policy, error) {
	p := &Policy{trusted: cfg.TrustedProxies, client: cfg.Client, shares: cfg.Shares}
	if p.client == nil {
		p.client = &http.Client{
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	seen := map[string]bool{}
	addStrip := func(h string) {
		if !seen[h] {
			seen[h] = true
			p.strip = append(p.strip, h)
		}
	}
	for i, r := range cfg.Rules {
		if _, err := path.Match(r.Match, ""); err != nil {
			return nil, fmt.Errorf("access: rule %d: match %q: %w", i, r.Match, err)
		}
		if r.Basic != nil && r.ForwardAuth != nil {
			return nil, fmt.Errorf("access: rule %d: basic and forward_auth exclude each other", i)
		}
		if len(r.AllowCIDRs) == 0 && r.Basic == nil && r.ForwardAuth == nil {
			return nil, fmt.Errorf("access: rule %d: allows nobody: set allow_cidrs, basic or forward_auth", i)
		}
		ru := &rule{Rule: r, any: r.Match == "" || r.Match == "*"}
		if r.Basic != nil {
			hp, err := loadHtpasswd(r.Basic.HtpasswdFile, cfg.Log)
			if err != nil {
				return nil, fmt.Errorf("access: rule %d: %w", i, err)
			}
			ru.users = hp
			addStrip(UserHeader)
		}
		if fa := r.ForwardAuth; fa != nil {
			if !strings.HasPrefix(fa.URL, "http://") && !strings.HasPrefix(fa.URL, "https://") {
				return nil, fmt.Errorf("access: rule %d: forward_auth url %q: want http:// or https://", i, fa.URL)
			}
			for _, h := range fa.CopyHeaders {
				c := http.CanonicalHeaderKey(h)
				ru.copied = append(ru.copied, c)
				addStrip(c)
			}
		}
		p.rules = append(p.rules, ru)
	}
	return p, nil
}

// Outcome is what a Decision says of a request.
type Outcome int

// Outcomes.
const (
	// Allowed: proxy the request (after Decision.Apply).
	Allowed Outcome = iota
	// Refused: answer with Status and Message; Challenge, when set, is
	// the WWW-Authenticate value of a 401.
	Refused
	// Replied: answer with Reply, the authentication service's answer.
	Replied
)

// Decision is a Policy's verdict on one request.
type Decision struct {
	Outcome Outcome
	// Status, Kind (short, machine-readable) and Message (one sentence
	// for people) describe a refusal.
	Status  int
	Kind    string
	Message string
	// Challenge is the WWW-Authenticate value of a Basic 401.
	Challenge string
	// Reply is the authentication service's answer to pass on.
	Reply *Reply
	// ShowOutput says whether this client may see the env's output.
	ShowOutput bool
	// Err is why the authentication service could not be asked, for the
	// gateway's log (kind auth_unavailable).
	Err error

	user     string      // Basic's user
	copied   http.Header // ForwardAuth's headers for the env
	dropAuth bool        // the Authorization header was the gateway's
	strip    []string
}

// Reply is an authentication service's non-2xx answer.
type Reply struct {
	Status int
	Header http.Header // without hop-by-hop fields and Content-Length
	Body   []byte      // at most maxReplyBody bytes
}

// Apply prepares the client's request for the env: it removes the
// headers only the gateway may set (a client could otherwise claim any
// user) and sets the ones this decision carries. Call it on the
// request's own header before proxying; it allocates only for the
// headers it sets.
func (d *Decision) Apply(h http.Header) {
	for _, k := range d.strip {
		delete(h, k)
	}
	if d.dropAuth {
		// The env must not learn the gateway's passwords.
		delete(h, "Authorization")
	}
	if d.user != "" {
		h[UserHeader] = []string{d.user}
	}
	for k, v := range d.copied {
		h[k] = v
	}
}

// CheckOperator is Check for a host that is not an env but is matched
// by its first label as if it were one (the dashboard): share links do
// not apply, so a link made for an env that happens to share the label
// never opens it.
func (p *Policy) CheckOperator(r *http.Request, label string, local bool) Decision {
	q := *p
	q.shares = nil
	return q.Check(r, label, local)
}

// Check decides r, a request for env on a domain that is a localhost
// domain if local. It may make a forward-auth subrequest (bounded by the
// rule's timeout and r's context), and it never reads r's body.
func (p *Policy) Check(r *http.Request, env string, local bool) Decision {
	ru := p.ruleFor(env)
	if ru == nil {
		if local {
			return Decision{Outcome: Allowed, ShowOutput: true, strip: p.strip}
		}
		return Decision{Outcome: Refused, Status: http.StatusForbidden, Kind: "no_access",
			Message: "No access rule admits anyone to environment " + env + " on this domain; the gateway's operator must add an access: entry matching it.",
			strip:   p.strip}
	}
	d := Decision{Outcome: Allowed, ShowOutput: local, strip: p.strip}
	if ru.ShowOutput != nil {
		d.ShowOutput = *ru.ShowOutput
	}
	if len(ru.AllowCIDRs) > 0 && contains(ru.AllowCIDRs, ClientAddr(r, p.trusted)) {
		return d
	}
	if p.shares != nil && p.shares.check(r, env) {
		return d
	}
	switch {
	case ru.users != nil:
		user, pass, ok := r.BasicAuth()
		if ok && ru.users.verify(user, pass) {
			d.user, d.dropAuth = user, true
			return d
		}
		return Decision{Outcome: Refused, Status: http.StatusUnauthorized, Kind: "unauthorized",
			Message:   "Environment " + env + " needs a user name and password.",
			Challenge: `Basic realm="envgate ` + env + `", charset="UTF-8"`, strip: p.strip}
	case ru.ForwardAuth != nil:
		return p.forwardAuth(r, ru, d)
	}
	return Decision{Outcome: Refused, Status: http.StatusForbidden, Kind: "forbidden",
		Message: "Your address may not reach environment " + env + ".", strip: p.strip}
}

// CheckConn decides a connection from client to env that carries no HTTP
// (a TCP listener's): only AllowCIDRs can admit it, as there is no
// request to authenticate. Share links do not apply either.
func (p *Policy) CheckConn(client netip.Addr, env string, local bool) error {
	ru := p.ruleFor(env)
	switch {
	case ru == nil && local:
		return nil
	case ru == nil:
		return fmt.Errorf("%w: no access rule matches env %s", ErrRefused, env)
	case len(ru.AllowCIDRs) > 0 && contains(ru.AllowCIDRs, client.Unmap()):
		return nil
	}
	return fmt.Errorf("%w: %s may not reach env %s over TCP (only allow_cidrs admits a connection without HTTP)", ErrRefused, client, env)
}

// Covers reports whether some rule matches env: without one, env is
// closed to everyone on domains other than localhost ones, and needs no
// certificate there.
func (p *Policy) Covers(env string) bool { return p.ruleFor(env) != nil }

// ErrRefused is CheckConn's refusal.
var ErrRefused = errors.New("access: refused")

func (p *Policy) ruleFor(env string) *rule {
	for _, ru := range p.rules {
		if ru.any {
			return ru
		}
		if ok, _ := path.Match(ru.Match, env); ok {
			return ru
		}
	}
	return nil
}

func contains(nets []netip.Prefix, a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, n := range nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

// ClientAddr is the address of the client that sent r: the peer's,
// unless the peer is a trusted proxy, in which case the nearest address
// in X-Forwarded-For (from the right) that is not a trusted proxy. The
// zero Addr if the peer's address does not parse.
func ClientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	a := ap.Addr().Unmap().WithZone("")
	if len(trusted) == 0 || !contains(trusted, a) {
		return a
	}
	xff := r.Header["X-Forwarded-For"]
	for i := len(xff) - 1; i >= 0; i-- {
		v := xff[i]
		for v != "" {
			j := strings.LastIndexByte(v, ',')
			hop := strings.TrimSpace(v[j+1:])
			v = v[:max(j, 0)]
			h, err := netip.ParseAddr(hop)
			if err != nil {
				return a // garbage: trust no further than the proxy
			}
			h = h.Unmap().WithZone("")
			if !contains(trusted, h) {
				return h
			}
			a = h
		}
	}
	return a
}
