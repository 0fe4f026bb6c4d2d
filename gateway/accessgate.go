package gateway

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/envgate/envgate/gateway/access"
)

// The access gate runs right after the Host check, before anything else
// happens for the request: a client that access control refuses starts
// nothing and sees no waiting page. Only StatusPath answers it, with the
// env's state and never its output.

// gate decides r for env. It returns the decision and, when the request
// must go no further, the status it has been answered with (0: go on).
func (h *Handler) gate(w http.ResponseWriter, r *http.Request, env string) (access.Decision, int) {
	local := isLocalHost(r.Host)
	d := h.access.Check(r, env, local)
	if r.URL.Path == StatusPath {
		// In cluster mode, the start runs on the env's owner node.
		if show := d.Outcome == access.Allowed && d.ShowOutput; !h.forwardStatus(w, r, env, show) {
			h.serveStatus(w, r, env, d)
		}
		return d, http.StatusOK
	}
	if strings.HasPrefix(r.URL.Path, access.SharePath) {
		return d, h.redeemShare(w, r, env)
	}
	if d.Outcome != access.Allowed {
		return d, h.refuse(w, r, env, &d)
	}
	d.Apply(r.Header)
	if h.newEnvs.counts(h.known, env, local) {
		if wait := h.newEnvs.take(access.ClientAddr(r, h.trusted)); wait > 0 {
			secs := int(wait/time.Second) + 1
			(&errorPage{Status: http.StatusTooManyRequests, Error: "too_many_new_envs", Env: env, RetryAfter: secs,
				Message: "Your address has started too many new environments lately; try again in " + strconv.Itoa(secs) + "s."}).write(w, r)
			return d, http.StatusTooManyRequests
		}
	}
	return d, 0
}

// refuse answers a request access control did not allow and returns
// the status sent.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, env string, d *access.Decision) int {
	if d.Outcome == access.Replied {
		// The authentication service's answer (a 401, a 403, a redirect
		// to its login page) goes back as it is.
		dst := w.Header()
		for k, v := range d.Reply.Header {
			dst[k] = v
		}
		dst.Set("Content-Length", strconv.Itoa(len(d.Reply.Body)))
		dst.Set(RequestIDHeader, r.Header.Get(RequestIDHeader))
		w.WriteHeader(d.Reply.Status)
		if r.Method != http.MethodHead {
			w.Write(d.Reply.Body)
		}
		return d.Reply.Status
	}
	if d.Err != nil {
		h.log.Warn().Err(d.Err).Str("env", env).Str("request_id", r.Header.Get(RequestIDHeader)).Msg("forward_auth")
	}
	if d.Challenge != "" {
		w.Header().Set("WWW-Authenticate", d.Challenge)
	}
	(&errorPage{Status: d.Status, Error: d.Kind, Env: env, Message: d.Message}).write(w, r)
	return d.Status
}

// redeemShare answers a share link: a valid token gets a cookie for this
// host only and a redirect to the env's front page.
func (h *Handler) redeemShare(w http.ResponseWriter, r *http.Request, env string) int {
	token := strings.TrimPrefix(r.URL.Path, access.SharePath)
	c := h.access.RedeemShare(env, token, r.TLS != nil)
	if c == nil {
		(&errorPage{Status: http.StatusForbidden, Error: "bad_share_link", Env: env,
			Message: "This share link for environment " + env + " is not valid or has expired; ask for a new one."}).write(w, r)
		return http.StatusForbidden
	}
	http.SetCookie(w, c)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Location", "/")
	w.WriteHeader(http.StatusFound)
	return http.StatusFound
}

// isLocalHost reports whether host (a Host header or SNI, with or
// without a port) is under localhost, where envs without an access rule
// are open.
func isLocalHost(host string) bool {
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	const l = "localhost"
	return len(host) >= len(l) && strings.EqualFold(host[len(host)-len(l):], l) &&
		(len(host) == len(l) || host[len(host)-len(l)-1] == '.')
}

// LocalDomain reports whether domain is localhost or under it.
func LocalDomain(domain string) bool { return isLocalHost(domain) }
