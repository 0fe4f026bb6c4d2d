package gateway

import (
	"net/http"
	"strings"

	"github.com/envgate/envgate/lifecycle"
)

// Every env is a host under a shared domain, so to a browser all envs
// are one site: a cookie env A sets with Domain=.<domain> (or a parent of
// it) is sent to, and overrides the cookies of, every other env. The
// gateway makes such cookies host-only by dropping their Domain
// attribute, unless the env's template opts out
// (EnvSettings.SharedDomainCookies).
// A Domain naming the env's own host, or something under it, stays. Real
// separation needs the shared domain on the Public Suffix List; this
// only keeps envs from setting each other's cookies through envgate.

// scopeCookies rewrites, in place, the Set-Cookie fields of hdr whose
// Domain covers other envs' hosts. It costs one map lookup when there
// are none.
func (h *Handler) scopeCookies(hdr http.Header, t *lifecycle.Template) {
	sc, ok := hdr["Set-Cookie"]
	if !ok || h.tmpls.of(t).SharedDomainCookies {
		return
	}
	for i, c := range sc {
		if v, changed := hostOnlyCookie(c, h.domains); changed {
			sc[i] = v
		}
	}
}

// hostOnlyCookie returns setCookie without its Domain attributes that
// name one of domains or a parent of one. It allocates only when it
// drops one.
func hostOnlyCookie(setCookie string, domains []string) (string, bool) {
	semi := strings.IndexByte(setCookie, ';')
	if semi < 0 {
		return setCookie, false
	}
	attrs := setCookie[semi+1:]
	drop := func(attr string) bool {
		k, v, _ := strings.Cut(attr, "=")
		return strings.EqualFold(strings.TrimSpace(k), "domain") && coversEnvs(v, domains)
	}
	found := false
	for a := range strings.SplitSeq(attrs, ";") {
		if drop(a) {
			found = true
			break
		}
	}
	if !found {
		return setCookie, false
	}
	var b strings.Builder
	b.Grow(len(setCookie))
	b.WriteString(setCookie[:semi])
	for a := range strings.SplitSeq(attrs, ";") {
		if !drop(a) {
			b.WriteByte(';')
			b.WriteString(a)
		}
	}
	return b.String(), true
}

// coversEnvs reports whether a cookie Domain value names one of domains
// or a parent of one, and so reaches the hosts of every env.
func coversEnvs(v string, domains []string) bool {
	d := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(v), "."), "."))
	if d == "" {
		return false
	}
	for _, dom := range domains {
		if dom == d || strings.HasSuffix(dom, "."+d) {
			return true
		}
	}
	return false
}
