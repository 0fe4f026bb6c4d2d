package gateway

import (
	"net/http"
	"strings"

	"github.com/envgate/envgate/gateway/access"
)

// The dashboard at a host of its own (admin.dashboard_host, e.g.
// envgate.dev.example.com): the admin API's read-only part and the env
// buttons, behind the same access control as envs. The host is not an
// env; access control goes by its first label, as if it were one, but
// more strictly: some access entry must match that label (a localhost
// domain's open default does not apply) and the client must pass it.

// dashboardRoutes are what the dashboard host serves of the admin API:
// the page, what it reads, and its stop, restart and destroy buttons
// (which, as on the admin listener, need the admin API's ActionHeader).
// Not reload, and not /metrics.
var dashboardRoutes = []string{
	"GET /{$}",
	"GET /v1/status",
	"GET /v1/envs",
	"GET /v1/envs/{name}",
	"GET /v1/envs/{name}/logs",
	"POST /v1/envs/{name}/stop",
	"POST /v1/envs/{name}/restart",
	"POST /v1/envs/{name}/destroy",
}

// WithDashboard returns a handler that serves dash (the admin API) at
// host, behind h's access control, and passes every other request to
// next (h, or a handler in front of it). host is <label>.<domain>; the
// label is what access entries match.
func (h *Handler) WithDashboard(next http.Handler, host string, dash http.Handler) http.Handler {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	label, domain, _ := strings.Cut(host, ".")
	local := LocalDomain(domain)
	mux := http.NewServeMux()
	for _, p := range dashboardRoutes {
		mux.Handle(p, dash)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !sameHost(r.Host, host) {
			next.ServeHTTP(w, r)
			return
		}
		if !h.access.Covers(label) {
			(&errorPage{Status: http.StatusForbidden, Error: "no_access",
				Message: "No access rule admits anyone to the dashboard; the gateway's operator must add an access: entry matching " + label + "."}).write(w, r)
			return
		}
		d := h.access.CheckOperator(r, label, local)
		if d.Outcome != access.Allowed {
			h.refuse(w, r, label, &d)
			return
		}
		if !d.ShowOutput && strings.HasSuffix(r.URL.Path, "/logs") {
			// Env output is for clients the access entry shows it to.
			(&errorPage{Status: http.StatusForbidden, Error: "no_output",
				Message: "The access entry matching " + label + " does not show env output (show_output)."}).write(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// sameHost reports whether a request's Host (maybe with a port and a
// final dot) is host, which is lower case.
func sameHost(reqHost, host string) bool {
	if len(reqHost) < len(host) {
		return false
	}
	if i := strings.LastIndexByte(reqHost, ':'); i >= 0 && !strings.Contains(reqHost[i:], "]") {
		reqHost = reqHost[:i]
	}
	reqHost = strings.TrimSuffix(reqHost, ".")
	return strings.EqualFold(reqHost, host)
}
